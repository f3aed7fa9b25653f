"""Rendered views as a Hugging Face dataset: subject-level splits, rows with explicit features, Parquet shards.

The last stage of a build before the folder (CLI -> config -> sources -> stages -> corpus rows -> folder). Layout of
a corpus folder (loads with ``datasets.load_dataset(folder)`` thanks to the card's ``configs:``)::

    README.md                      dataset card (YAML header + documentation)
    build_config.json              the resolved build configuration
    example.png                    an example view with mask overlays
    data/{split}-{subject}.parquet one shard per subject, written atomically

One shard per subject makes builds resumable (a finished subject is never rebuilt) and lets many
processes or machines write into one folder without coordination; a shard appears under its final name
only once it is complete (``storage.Folder.write``).
"""

from __future__ import annotations

import io

import datasets
import numpy as np
from PIL import Image

from chexanatomy.anatomy import STRUCTURES, tokenisable
from chexanatomy.mask_tokens import MaskTokenizer, format_detect_target
from chexanatomy.masks import Box, tight_box
from chexanatomy.subjects import safe_name, stable_fraction

from .appearance import Appearance
from .ct import CTInputError
from .geometry import Framing, Pose, view_geometry
from .render import RenderedView

SPLITS = ("train", "validation", "test")
# 2.0: radiograph-like appearance (physics, processing, framing) and lung fields; 2.1: lung fields on frontal views
# only, without the specks thin occluders cut off (dataset_builder.render.view_masks); 2.2: lung fields end at their
# costophrenic angles (chexanatomy.anatomy.COSTOPHRENIC_MIN_WIDTH)
FORMAT_VERSION = "2.2"


def _features_of(record: dict) -> dict:
    """``datasets`` features of a recorded dict: int32, float32, bool, string, float32 lists, nested dicts."""

    def feature(value):
        if isinstance(value, dict):
            return {k: feature(v) for k, v in value.items()}
        if isinstance(value, bool):
            return datasets.Value("bool")
        if isinstance(value, str):
            return datasets.Value("string")
        if isinstance(value, int):
            return datasets.Value("int32")
        if isinstance(value, list | tuple):
            return datasets.List(datasets.Value("float32"))
        return datasets.Value("float32")

    return feature(record)


def _geometry_record(geometry) -> dict:
    """A ``ViewGeometry`` as its row's ``geometry`` dict (the view is a column of its own)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in geometry.to_dict().items() if k != "view"}


def _pose_record(pose: Pose) -> dict:
    return {"rotation_deg": list(pose.rotation_deg), "translation_mm": list(pose.translation_mm)}


FEATURES = datasets.Features(
    {
        "image": datasets.Image(),
        "subject_id": datasets.Value("string"),
        "source": datasets.Value("string"),
        "view": datasets.Value("string"),
        "pose_index": datasets.Value("int32"),
        # The recorded parameters' features follow their dataclasses (one definition of each field).
        "geometry": _features_of(_geometry_record(view_geometry("PA", 64))),
        "pose": _features_of(_pose_record(Pose())),
        "appearance": _features_of(Appearance().to_dict()),
        "framing": _features_of(Framing().to_dict()),
        "mask_threshold_mm": datasets.Value("float32"),
        "structures": datasets.List(
            {
                "name": datasets.Value("string"),
                "mask": datasets.Image(),
                "bbox": datasets.List(datasets.Value("int32")),
                "area_px": datasets.Value("int32"),
                "segment_target": datasets.Value("string"),
                "detect_target": datasets.Value("string"),
            }
        ),
    }
)


def check_fractions(fractions) -> None:
    """``ValueError`` unless ``fractions`` are 3 non-negative numbers (train, validation, test) summing to 1."""
    if len(fractions) != 3 or not all(0 <= f <= 1 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"--split_fractions must be 3 non-negative numbers summing to 1, got {fractions}")


def split_of(subject_id: str, fractions=(0.8, 0.1, 0.1)) -> str:
    """The split of a subject, a pure function of its id (never of other subjects or of images).

    The id's SHA-256 gives a uniform number in [0, 1) (``chexanatomy.subjects.stable_fraction``), cut at the
    cumulative ``fractions``.
    """
    check_fractions(fractions)
    u = stable_fraction(subject_id)
    edges = np.cumsum(fractions)
    return SPLITS[int(min(np.searchsorted(edges, u, side="right"), 2))]


def subject_split(subject_id: str, given: str | None, fractions=(0.8, 0.1, 0.1)) -> str:
    """The split of a subject: ``given`` (fixed by the collection's metadata) if any, else ``split_of`` its id.

    Raises:
        CTInputError: ``given`` is not one of ``SPLITS`` (the subject fails; the rest of the build goes on).
    """
    if given is None:
        return split_of(subject_id, tuple(fractions))
    if given not in SPLITS:
        raise CTInputError(f"{subject_id}: split {given!r} is not one of {SPLITS}")
    return given


def mask_boxes(view: RenderedView) -> dict[str, Box]:
    """Structure name -> tight box ``(y0, x0, y1, x1)`` in pixels (y1/x1 exclusive) of each (non-empty) mask."""
    return {name: tight_box(mask) for name, mask in view.masks.items()}


def token_targets(
    view: RenderedView, tokenizer: MaskTokenizer | None, boxes: dict[str, Box] | None = None
) -> dict[str, tuple[str | None, str | None]]:
    """Structure name -> (segment target, detect target) text, named with the structure's display name.

    Segment targets are ``<loc>`` x4 + ``<seg>`` x16 + name; detect targets ``<loc>`` x4 + name. Multipart unions
    (a rib cage) get a detect target only: their mask does not fit one object's 16 codes. ``boxes`` are the
    masks' tight boxes (``mask_boxes``; computed when not given).
    """
    if tokenizer is None:
        return {name: (None, None) for name in view.masks}
    boxes = mask_boxes(view) if boxes is None else boxes
    hw = view.image.shape
    single = [n for n in view.masks if tokenisable(n)]
    segment = (
        tokenizer.encode(
            np.stack([view.masks[n] for n in single]),
            [STRUCTURES[n].display for n in single],
            boxes=np.array([boxes[n] for n in single]),
        )
        if single
        else []
    )
    seg_by_name = dict(zip(single, segment, strict=True))  # encode returns one target per mask
    return {
        name: (seg_by_name.get(name), format_detect_target(boxes[name], hw, STRUCTURES[name].display))
        for name in view.masks
    }


def to_row(
    view: RenderedView, subject_id: str, source: str, threshold_mm: float, tokenizer: MaskTokenizer | None = None
) -> dict:
    """One dataset row (see ``FEATURES``) for a rendered view; text targets when a tokenizer is given."""
    boxes = mask_boxes(view)  # once per mask: the bbox column and both targets use it
    targets = token_targets(view, tokenizer, boxes)
    g = view.geometry
    return {
        "image": Image.fromarray(view.image, mode="L"),
        "subject_id": subject_id,
        "source": source,
        "view": g.view,
        "pose_index": view.pose_index,
        "geometry": _geometry_record(g),
        "pose": _pose_record(view.pose),
        "appearance": view.appearance.to_dict(),
        "framing": (view.framing or Framing(0.0, 0.0, 0.0)).to_dict(),
        "mask_threshold_mm": threshold_mm,
        "structures": [
            {
                "name": name,
                "mask": Image.fromarray(mask),
                "bbox": list(boxes[name]),
                "area_px": int(mask.sum()),
                "segment_target": targets[name][0],
                "detect_target": targets[name][1],
            }
            for name, mask in view.masks.items()
        ],
    }


def shard_file(split: str, subject_id: str) -> str:
    """Shard file of one subject, relative to the corpus folder: ``data/{split}-{safe subject id}.parquet``."""
    return f"data/{split}-{safe_name(subject_id)}.parquet"


def shard_bytes(rows: list[dict]) -> bytes:
    """The Parquet file of ``rows`` (see ``FEATURES``): the same bytes in any process, on any machine."""
    datasets.disable_progress_bars()  # one bar per build (subjects) is enough
    buffer = io.BytesIO()
    datasets.Dataset.from_list(rows, features=FEATURES).to_parquet(buffer)
    return buffer.getvalue()


def existing_shards(folder) -> dict[str, list[str]]:
    """Split -> sorted shard files (relative, ``data/...``) in a ``storage.Folder`` (temporary files ignored)."""
    names = [n for n in folder.names("data") if n.endswith(".parquet") and not n.startswith(".")]
    return {s: [f"data/{n}" for n in names if n.startswith(f"{s}-")] for s in SPLITS}
