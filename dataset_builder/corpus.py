"""Writing rendered views as a Hugging Face dataset: explicit features, subject-level splits, Parquet shards.

Layout of a corpus folder (loads with ``datasets.load_dataset(folder)`` thanks to the card's ``configs:``)::

    README.md                      dataset card (YAML header + documentation)
    build_config.json              the resolved build configuration
    example.png                    an example view with mask overlays
    data/{split}-{subject}.parquet one shard per subject, written atomically

One shard per subject makes builds resumable (a finished subject is never rebuilt) and lets many
processes or machines write into one folder without coordination; a shard appears under its final name
only once it is complete (written to a temporary name, then ``os.replace``).
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import datasets
import numpy as np
from PIL import Image

from chexanatomy.anatomy import STRUCTURES
from chexanatomy.mask_tokens import MaskTokenizer, format_detect_target
from chexanatomy.masks import Box, tight_box

from .appearance import Appearance
from .geometry import Framing
from .render import RenderedView

SPLITS = ("train", "validation", "test")
FORMAT_VERSION = "2.0"  # 2.0: radiograph-like appearance (physics, processing, framing) and lung fields


def _features_of(example: Appearance) -> dict:
    """``datasets`` features of a recorded parameter dict: float32 numbers, bools, strings, nested dicts, lists."""

    def feature(value):
        if isinstance(value, dict):
            return {k: feature(v) for k, v in value.items()}
        if isinstance(value, bool):
            return datasets.Value("bool")
        if isinstance(value, str):
            return datasets.Value("string")
        if isinstance(value, list | tuple):
            return datasets.List(datasets.Value("float32"))
        return datasets.Value("float32")

    return feature(example.to_dict())


FEATURES = datasets.Features(
    {
        "image": datasets.Image(),
        "subject_id": datasets.Value("string"),
        "source": datasets.Value("string"),
        "view": datasets.Value("string"),
        "pose_index": datasets.Value("int32"),
        "geometry": {
            "size_px": datasets.Value("int32"),
            "sid_mm": datasets.Value("float32"),
            "sod_mm": datasets.Value("float32"),
            "detector_mm": datasets.Value("float32"),
            "pixel_mm": datasets.Value("float32"),
            "isocenter_mm": datasets.List(datasets.Value("float32")),
        },
        "pose": {
            "rotation_deg": datasets.List(datasets.Value("float32")),
            "translation_mm": datasets.List(datasets.Value("float32")),
        },
        "appearance": _features_of(Appearance()),
        "framing": {name: datasets.Value("float32") for name in Framing.__dataclass_fields__},
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


def split_of(subject_id: str, fractions=(0.8, 0.1, 0.1)) -> str:
    """The split of a subject, a pure function of its id (never of other subjects or of images).

    The id's SHA-256 gives a uniform number in [0, 1), cut at the cumulative ``fractions``.
    """
    if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-6 or min(fractions) < 0:
        raise ValueError(f"split fractions must be 3 non-negative numbers summing to 1, got {fractions}")
    u = int(hashlib.sha256(subject_id.encode()).hexdigest()[:8], 16) / 2**32
    edges = np.cumsum(fractions)
    return SPLITS[int(min(np.searchsorted(edges, u, side="right"), 2))]


_SAFE_ID = re.compile(r"[A-Za-z0-9._-]{1,120}")
_HASH_MARK = "~"  # outside the safe alphabet: a hashed name never equals an unchanged one


def safe_name(subject_id: str) -> str:
    """``subject_id`` as a file-name component (letters, digits, ``._-~``), injective: two ids, two names.

    An id of at most 120 letters, digits and ``._-`` is its own name. Any other id becomes a readable prefix (other
    characters replaced by ``_``, at most 80) + ``~`` + 12 hex digits of the id's SHA-256, so ``x 1``, ``x_1`` and
    ``x/1`` get three names. Raises ``ValueError`` for an empty id.
    """
    if not subject_id:
        raise ValueError("a subject id must not be empty")
    if _SAFE_ID.fullmatch(subject_id):
        return subject_id
    digest = hashlib.sha256(subject_id.encode("utf-8", errors="surrogatepass")).hexdigest()[:12]
    return re.sub(r"[^A-Za-z0-9._-]", "_", subject_id)[:80] + _HASH_MARK + digest


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
    single = [n for n in view.masks if not STRUCTURES[n].multipart]
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
        "geometry": {
            "size_px": g.size_px,
            "sid_mm": g.sid_mm,
            "sod_mm": g.sod_mm,
            "detector_mm": g.detector_mm,
            "pixel_mm": g.pixel_mm,
            "isocenter_mm": list(g.isocenter_mm),
        },
        "pose": {"rotation_deg": list(view.pose.rotation_deg), "translation_mm": list(view.pose.translation_mm)},
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


def shard_path(root: Path, split: str, subject_id: str) -> Path:
    """Shard file of one subject: ``root/data/{split}-{safe subject id}.parquet``."""
    return Path(root) / "data" / f"{split}-{safe_name(subject_id)}.parquet"


def temporary_path(path: Path) -> Path:
    """Where ``path`` is written before ``os.replace`` puts it in place: ``.{name}.tmp-{pid}`` beside it."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def target_of_temporary(name: str) -> str | None:
    """The file name a temporary file name (see ``temporary_path``) stands for, None for any other name."""
    match = re.fullmatch(r"\.(.+)\.tmp-[0-9]+", name)
    return match.group(1) if match else None


def write_text_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the whole new one, never a part."""
    tmp = temporary_path(path)
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_shard(rows: list[dict], path: Path) -> None:
    """Write rows as one Parquet file, atomically: readers never see a partial shard."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        datasets.disable_progress_bars()  # one bar per build (subjects) is enough
        datasets.Dataset.from_list(rows, features=FEATURES).to_parquet(str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def existing_shards(root: Path) -> dict[str, list[Path]]:
    """Split -> sorted shard files present in a corpus folder (temporary files ignored)."""
    return {s: sorted((Path(root) / "data").glob(f"{s}-*.parquet")) for s in SPLITS}
