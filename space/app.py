"""CheXanatomy Space: a vision-language model segments chest X-ray anatomy, with a U-Net baseline beside it.

    python space/app.py                                    # bundled demonstration models, http://127.0.0.1:7860
    python space/app.py --vlm chexanatomy/paligemma2-3b-anatomy-448 --unet chexanatomy/unet-anatomy
    cd space && python app.py                              # as Hugging Face Spaces runs it

Upload a radiograph (PNG, JPEG or DICOM) or pick an example, choose structures, and both models answer: the
VLM writes each structure as ``<loc>`` box + ``<seg>`` mask tokens (shown raw), the U-Net predicts one channel per
structure. The examples are two real radiographs (no ground truth) and held-out corpus images with ground-truth masks,
whose table also shows Dice.

Input rules (each broken rule is a message to the user, never a crash): at most ``MAX_IMAGE_PIXELS`` (50 MP)
before decoding (a larger header is treated as a decompression bomb), at least ``MIN_SIDE`` px per side, long
side downscaled to ``MAX_SIDE`` (1,024 px) before inference, alpha flattened onto black, DICOM rescaled
(slope/intercept), windowed when the file carries a window, and MONOCHROME1 inverted. Sides are the patient's:
"left lung" is the patient's left lung, on the image's right in a PA view.

The app imports only the core ``chexanatomy`` package; Gradio supplies the UI, queue and API. One Gradio
internal is replaced while the UI is built: ``atomic_save_pil_to_cache`` (a race that truncated downloads under load).
"""

from __future__ import annotations

import os

# Before gradio is imported: no usage analytics, no version check, no Hub telemetry.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import uuid  # noqa: E402
import warnings  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
import pydicom  # noqa: E402
from gradio import processing_utils  # noqa: E402
from PIL import Image, ImageOps, UnidentifiedImageError  # noqa: E402
from pydicom.pixels import apply_modality_lut, apply_voi_lut  # noqa: E402

from chexanatomy.anatomy import STRUCTURES  # noqa: E402
from chexanatomy.inference import Prediction, Segmenter, grey_image, load_segmenter, timed_segment  # noqa: E402
from chexanatomy.masks import dice  # noqa: E402

logger = logging.getLogger("chexanatomy.space")

HERE = Path(__file__).resolve().parent
EXAMPLES_DIR = HERE / "examples"
HUB_MODELS = {"vlm": "chexanatomy/paligemma2-3b-anatomy-448", "unet": "chexanatomy/unet-anatomy"}

MAX_IMAGE_PIXELS = 50_000_000  # 50 MP: a 16-bit 7,000 x 7,000 detector image still fits
MAX_SIDE = 1024  # long side for inference; both models work at <= 448 px internally
MIN_SIDE = 32
MAX_STRUCTURES = 60  # per request: the VLM answers one prompt per structure (~0.1 s each for the tiny CPU model)
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS  # PIL warns above this and raises above twice it; both are refused

# Lung fields first: on a radiograph the lungs are what a radiologist outlines (the SCR definition, not the whole
# lung behind the heart and the domes).
DEFAULT_STRUCTURES = ("lung_field_right", "lung_field_left", "heart", "trachea", "clavicle_right", "clavicle_left")
ALL = "all"
# Picker regions -> vocabulary groups (chexanatomy.anatomy.GROUPS). The "other" group is placed by structure:
# the back muscles go with the spine, the iliopsoas with the abdomen; brain and skull lie outside a chest film.
REGIONS = {
    "lungs": ("lungs",),
    "heart and vessels": ("heart_and_great_vessels",),
    "airway and mediastinum": ("airway", "mediastinum"),
    "ribs": ("ribs",),
    "spine": ("spine",),
    "shoulder girdle": ("shoulder_girdle",),
    "abdomen": ("abdomen",),
}
OTHER_GROUP_REGIONS = {
    "autochthon_left": "spine",
    "autochthon_right": "spine",
    "iliopsoas_left": "abdomen",
    "iliopsoas_right": "abdomen",
}
# 18 of Sasha Trubetskoy's 20 distinct colours (the two darkest are invisible on a radiograph).
PALETTE = [
    "#e6194b",
    "#3cb44b",
    "#ffe119",
    "#4363d8",
    "#f58231",
    "#911eb4",
    "#46f0f0",
    "#f032e6",
    "#bcf60c",
    "#fabebe",
    "#008080",
    "#e6beff",
    "#9a6324",
    "#fffac8",
    "#800000",
    "#aaffc3",
    "#808000",
    "#ffd8b1",
]
MISSING = "—"
OVERLAY_ALPHA = 0.55  # mask opacity: the radiograph stays visible under the colours


class InputError(ValueError):
    """An upload or selection the app cannot use; the message is shown to the user as is."""


# --------------------------------------------------------------------------------------------------
# Reading radiographs
# --------------------------------------------------------------------------------------------------


def read_radiograph(path: str | Path) -> tuple[Image.Image, list[str]]:
    """A grey "L" image from a PNG/JPEG/any PIL format or a DICOM file, and notes on what was done to it.

    Raises:
        InputError: for files that are not images, damaged files and images over ``MAX_IMAGE_PIXELS``.
    """
    path = Path(path)
    with path.open("rb") as f:
        head = f.read(132)
    if head[128:132] == b"DICM" or path.suffix.lower() in (".dcm", ".dicom"):
        return read_dicom(path)
    return read_picture(path)


def read_picture(path: Path) -> tuple[Image.Image, list[str]]:
    """A PIL-readable picture as grey "L" (EXIF orientation applied, alpha flattened, 16-bit min-max scaled)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as opened:
                opened.load()
                image = ImageOps.exif_transpose(opened)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise InputError(
            f"{path.name} is too large: {_bomb_size(error)}at most {MAX_IMAGE_PIXELS / 1e6:.0f} "
            "megapixels are accepted (larger files are refused as possible decompression bombs)."
        ) from None
    except UnidentifiedImageError:
        raise InputError(f"{path.name} is not an image: upload a PNG, JPEG or DICOM radiograph.") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise InputError(f"{path.name} could not be decoded; it is truncated or damaged ({error}).") from None
    image, notes = flatten_alpha(image)
    return grey_or_refuse(image, path.name), notes


def grey_or_refuse(image: Image.Image | np.ndarray, name: str) -> Image.Image:
    """``grey_image``, its refusals (1x1 images, odd arrays) turned into messages for the user."""
    try:
        return grey_image(image)
    except ValueError as error:
        raise InputError(f"{name} cannot be segmented: {error}.") from None


def _bomb_size(error: Exception) -> str:
    """The exact pixel count from PIL's bomb message as "the image has 50,000,001 pixels; ", or "" when it gives none.

    Exact, not rounded to megapixels: an image just over the limit must not read "50 megapixels; at most 50".
    """
    words = [w for w in str(error).replace("(", " ").split() if w.isdigit()]
    return f"the image has {int(words[0]):,} pixels; " if words else ""


def flatten_alpha(image: Image.Image) -> tuple[Image.Image, list[str]]:
    """The image composited onto black when it has transparency (RGBA, LA, PA or P with a transparent colour)."""
    if image.mode not in ("RGBA", "LA", "PA") and "transparency" not in image.info:
        return image, []
    black = Image.new("RGBA", image.size, (0, 0, 0, 255))
    flat = Image.alpha_composite(black, image.convert("RGBA")).convert("RGB")
    return flat, ["The image had an alpha channel: it was flattened onto black."]


def read_dicom(path: Path) -> tuple[Image.Image, list[str]]:
    """A DICOM radiograph as grey "L": first frame, modality LUT (rescale), VOI LUT/window, MONOCHROME1 inverted.

    Raises:
        InputError: for files pydicom cannot read, without pixel data, too large or with an undecodable
            (e.g. compressed without a plugin) transfer syntax.
    """
    try:
        ds = pydicom.dcmread(path, force=True)
        rows, cols, frames = int(ds.Rows), int(ds.Columns), int(ds.get("NumberOfFrames", 1) or 1)
    except Exception as error:  # pydicom raises many kinds on garbage; all mean "not a usable DICOM"
        raise InputError(f"{path.name} is not a readable DICOM image ({type(error).__name__}: {error}).") from None
    if rows * cols * frames > MAX_IMAGE_PIXELS:
        raise InputError(
            f"{path.name} is too large: {rows}x{cols} pixels x {frames} frame(s); at most "
            f"{MAX_IMAGE_PIXELS / 1e6:.0f} megapixels are accepted."
        )
    try:
        pixels = ds.pixel_array
    except Exception as error:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "unknown")
        raise InputError(
            f"{path.name}: the DICOM pixel data could not be decoded (transfer syntax {syntax}: {error})."
        ) from None
    pixels = pixels[0] if frames > 1 else pixels
    values, notes = dicom_grey_values(pixels, ds)
    return grey_or_refuse(values, path.name), notes


def dicom_grey_values(pixels: np.ndarray, ds: pydicom.Dataset) -> tuple[np.ndarray, list[str]]:
    """Display values of one frame: float32 [H, W] with larger = brighter (or [H, W, 3] RGB for colour files)."""
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if not photometric.startswith("MONOCHROME"):
        return pixels, [f"DICOM {photometric} image converted to grey."]
    notes = []
    values = apply_modality_lut(pixels, ds)
    if "WindowCenter" in ds or "VOILUTSequence" in ds:
        values = apply_voi_lut(values, ds, index=0)
        notes.append("The DICOM window (VOI LUT) was applied.")
    values = np.asarray(values, dtype=np.float32)
    if photometric == "MONOCHROME1":  # low values are white: invert so that bone is bright
        values = values.max() + values.min() - values
        notes.append("MONOCHROME1 DICOM: intensities were inverted.")
    return values, notes


def fit_for_inference(image: Image.Image) -> tuple[Image.Image, list[str]]:
    """The image with its long side at most ``MAX_SIDE`` px (aspect kept), and a note when it was downscaled.

    Raises:
        InputError: when a side is (or would become) shorter than ``MIN_SIDE`` px.
    """
    width, height = image.size
    notes = []
    if max(width, height) > MAX_SIDE:
        scale = MAX_SIDE / max(width, height)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
        notes.append(
            f"The image was downscaled from {width}x{height} to {size[0]}x{size[1]} px "
            f"(long side at most {MAX_SIDE} px for inference)."
        )
    if min(image.size) < MIN_SIDE:
        raise InputError(
            f"The image is {width}x{height} pixels: too small (or too narrow) to segment; at least "
            f"{MIN_SIDE} px per side are needed."
        )
    return image, notes


# --------------------------------------------------------------------------------------------------
# Examples and ground truth
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Example:
    """A bundled example: ``image`` (PNG) with ground-truth masks in ``masks`` (npz, see make_examples.py).

    ``masks`` is None for a real radiograph, which has no ground truth.
    """

    image: Path
    masks: Path | None
    label: str


def load_examples(examples_dir: Path | None) -> list[Example]:
    """The examples in ``examples_dir``, in examples.json order when present.

    Every ``NAME.png`` with a ``NAME.npz`` (rendered, with ground truth), and every PNG that examples.json lists with
    ``"masks": null`` (a real radiograph).
    """
    if examples_dir is None or not Path(examples_dir).is_dir():
        return []
    examples_dir = Path(examples_dir)
    meta_file = examples_dir / "examples.json"
    meta = json.loads(meta_file.read_text())["examples"] if meta_file.exists() else []
    labels = {m["image"]: _example_label(m) for m in meta}
    real = {m["image"] for m in meta if m.get("masks") is None}
    order = {m["image"]: i for i, m in enumerate(meta)}
    pngs = sorted(examples_dir.glob("*.png"), key=lambda p: (order.get(p.name, len(order)), p.name))
    return [
        Example(p, None if p.name in real else p.with_suffix(".npz"), labels.get(p.name, p.stem))
        for p in pngs
        if p.name in real or p.with_suffix(".npz").exists()
    ]


def _example_label(entry: dict) -> str:
    if entry.get("masks") is None:
        return f"real radiograph ({entry['subject_id']}), no ground truth"
    return f"{entry['view']} view, held-out subject {entry['subject_id']}, pose {entry['pose_index']}"


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (Gradio copies examples to temporary paths; the content stays the same)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_ground_truth(masks_file: Path, size: tuple[int, int]) -> dict[str, np.ndarray]:
    """Ground-truth masks, name -> bool [H, W] at ``size`` = (W, H) (nearest-resized when the image was resized)."""
    with np.load(masks_file) as data:
        names, (height, width) = [str(n) for n in data["names"]], data["shape"]
        masks = np.unpackbits(data["masks"], axis=1, count=height * width).reshape(len(names), height, width)
    if (width, height) != tuple(size):
        return {
            n: np.asarray(Image.fromarray(m * 255).resize(size, Image.Resampling.NEAREST)) > 0
            for n, m in zip(names, masks, strict=True)
        }
    return {n: m.astype(bool) for n, m in zip(names, masks, strict=True)}


# --------------------------------------------------------------------------------------------------
# Structures
# --------------------------------------------------------------------------------------------------


def region_of(name: str) -> str | None:
    """The picker region of a vocabulary structure, None for those outside a chest radiograph (brain, skull)."""
    group = STRUCTURES[name].group
    if group == "other":
        return OTHER_GROUP_REGIONS.get(name)
    return next((region for region, groups in REGIONS.items() if group in groups), None)


def offered_structures(models: list[Segmenter]) -> list[str]:
    """Structures at least one model segments and the picker places in a region; region order, then vocabulary."""
    known = {n for m in models for n in m.structures}
    names = [n for n in STRUCTURES if n in known and region_of(n) is not None]
    return sorted(names, key=lambda n: list(REGIONS).index(region_of(n)))  # stable: vocabulary order within a region


def selected_structures(
    regions: list[str] | None, picks: list[str] | None, offered: list[str], limit: int
) -> tuple[list[str], list[str]]:
    """The union of whole regions ("all" = every offered structure) and single picks, in ``offered`` order, capped.

    Returns:
        (names, notes): at most ``limit`` names (the first in ``offered`` order) and a note when capped.

    Raises:
        InputError: when nothing is selected.
    """
    regions, wanted = list(regions or []), set(picks or [])
    wanted |= {n for n in offered if ALL in regions or region_of(n) in regions}
    names = [n for n in offered if n in wanted]
    if not names:
        raise InputError("No structure selected: pick at least one structure or region.")
    if len(names) <= limit:
        return names, []
    return names[:limit], [
        f"{len(names)} structures were selected; only the first {limit} (in region order, up to "
        f"{structure_label(names[limit - 1])}) are segmented per request."
    ]


def coverage_notes(names: list[str], models: list[tuple[str, Segmenter]]) -> list[str]:
    """A note per model that does not segment some of ``names`` (its table cells read "—")."""
    notes = []
    for title, model in models:
        missing = [structure_label(n) for n in names if n not in model.structures]
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            notes.append(f"The {title} does not segment {shown} (— in its columns).")
    return notes


def structure_label(name: str) -> str:
    """The overlay/table label: the display name, which carries the patient's side ("left lung")."""
    return STRUCTURES[name].display


def color_map(names: list[str]) -> dict[str, str]:
    """A fixed colour per structure label (``names`` order through ``PALETTE``), the same in both overlays."""
    return {structure_label(n): PALETTE[i % len(PALETTE)] for i, n in enumerate(names)}


# --------------------------------------------------------------------------------------------------
# Running the models and shaping their answers
# --------------------------------------------------------------------------------------------------


@dataclass
class ModelResult:
    """One model's answers to one request: ``predictions`` name -> ``Prediction`` and the seconds they took."""

    title: str
    kind: str
    predictions: dict[str, Prediction]
    seconds: float


def run_model(title: str, model: Segmenter, image: Image.Image, names: list[str]) -> ModelResult:
    """``model``'s predictions for the ``names`` it knows (others are left out of its result)."""
    known = [n for n in names if n in model.structures]
    if not known:  # segment(image, []) would mean "every structure"
        return ModelResult(title, model.kind, {}, 0.0)
    try:
        predictions, seconds = timed_segment(model, image, known)
    except Exception as error:  # a model failure is reported for this request; the server keeps serving
        logger.exception("%s failed", title)
        raise gr.Error(f"The {title} failed on this image ({type(error).__name__}: {error}).") from None
    return ModelResult(title, model.kind, predictions, seconds)


def overlay(image: Image.Image, result: ModelResult | None) -> tuple[np.ndarray, list] | None:
    """``gr.AnnotatedImage`` value: RGB uint8 [H, W, 3] and one (float [H, W] opacity, label) per non-empty mask."""
    if result is None:
        return None
    found = [(p.mask * OVERLAY_ALPHA, structure_label(n)) for n, p in result.predictions.items() if p.area_px]
    return np.asarray(image.convert("RGB")), found


def table_headers(models: list[tuple[str, Segmenter]]) -> list[str]:
    """Columns: structure, per model area / box (/ valid for a VLM), then the models' Dice side by side."""
    headers = ["structure"]
    for title, model in models:
        headers += [f"{title} area px", f"{title} box y0,x0,y1,x1"] + (
            [f"{title} valid"] if model.kind == "vlm" else []
        )
    return headers + [f"{title} Dice" for title, _ in models]


def table_rows(names: list[str], results: list[ModelResult], truth: dict[str, np.ndarray]) -> list[list]:
    """One row per structure (see ``table_headers``); "—" where a model does not segment it or there is no truth."""
    rows = []
    for name in names:
        row, scores = [structure_label(name)], []
        for result in results:
            prediction = result.predictions.get(name)
            row += _model_cells(prediction, result.kind)
            known = prediction is not None and name in truth
            scores.append(round(dice(prediction.mask, truth[name]), 3) if known else MISSING)
        rows.append(row + scores)
    return rows


def _model_cells(prediction: Prediction | None, kind: str) -> list:
    """Area, box ("" when empty) and, for a VLM, validity of one prediction; "—" cells when there is none."""
    width = 3 if kind == "vlm" else 2
    if prediction is None:
        return [MISSING] * width
    box = ", ".join(str(v) for v in prediction.box) if prediction.box else ""
    return [prediction.area_px, box] + (["yes" if prediction.valid else "no"] if kind == "vlm" else [])


def raw_answers(results: list[ModelResult]) -> str:
    """The VLMs' raw answers, one "label: answer" line per structure (invalid ones marked)."""
    lines = [
        f"{structure_label(n)}: {p.answer}" + ("" if p.valid else "   [invalid: empty mask]")
        for r in results
        if r.kind == "vlm"
        for n, p in r.predictions.items()
    ]
    return "\n".join(lines) if lines else "(no VLM answers in this request)"


def timing_text(results: list[ModelResult], size: tuple[int, int]) -> str:
    """One line such as "VLM 1.23 s for 6 structures · U-Net 0.05 s for 6 structures · image 512x512 px"."""
    parts = [f"{r.title} {r.seconds:.2f} s for {len(r.predictions)} structures" for r in results]
    return " · ".join([*parts, f"image {size[0]}x{size[1]} px"])


# --------------------------------------------------------------------------------------------------
# The app
# --------------------------------------------------------------------------------------------------


class SpaceApp:
    """The models, the examples' ground truth and the request handler behind the UI.

    Args:
        vlm: a VLM ``Segmenter`` or None.
        unet: a U-Net ``Segmenter`` or None (at least one of the two).
        examples: bundled examples whose uploads (matched by content hash) get Dice columns.
        max_structures: cap on structures per request.
    """

    def __init__(self, vlm: Segmenter | None, unet: Segmenter | None, examples: list[Example], max_structures: int):
        self.slots = [("VLM", vlm), ("U-Net", unet)]
        self.models = [(title, model) for title, model in self.slots if model is not None]
        if not self.models:
            raise ValueError("the Space needs a VLM, a U-Net or both")
        self.offered = offered_structures([m for _, m in self.models])
        self.truth_files = {file_sha256(e.image): e.masks for e in examples if e.masks is not None}
        self.max_structures = max_structures

    def segment(self, file: str | None, regions: list[str] | None, picks: list[str] | None) -> tuple:
        """The click handler: (VLM overlay, U-Net overlay, table, raw answers, time, notes); bad input -> gr.Error."""
        try:
            return self._segment(file, regions, picks)
        except InputError as error:
            logger.info("refused: %s", error)
            raise gr.Error(str(error), title="Cannot segment this input", print_exception=False) from None

    def _segment(self, file: str | None, regions: list[str] | None, picks: list[str] | None) -> tuple:
        if not file:
            raise InputError("No radiograph: upload a PNG, JPEG or DICOM file, or click an example first.")
        names, notes = selected_structures(regions, picks, self.offered, self.max_structures)
        image, read_notes = read_radiograph(file)
        image, fit_notes = fit_for_inference(image)
        notes += read_notes + fit_notes + coverage_notes(names, self.models)
        for note in notes:
            gr.Warning(note)
        truth = self.ground_truth(file, image.size)
        if truth:
            notes.append("Bundled example: Dice against its ground-truth masks is in the table.")
        results = {title: run_model(title, model, image, names) for title, model in self.models}
        logger.info("%d structures: %s", len(names), timing_text(list(results.values()), image.size))
        overlays = [overlay(image, results.get(title)) for title, _ in self.slots]
        found = list(results.values())
        table = table_rows(names, found, truth)
        return (*overlays, table, raw_answers(found), timing_text(found, image.size), "\n".join(notes))

    def ground_truth(self, file: str, size: tuple[int, int]) -> dict[str, np.ndarray]:
        """Ground-truth masks when ``file`` is a bundled example (same bytes), else {}."""
        masks = self.truth_files.get(file_sha256(file))
        return load_ground_truth(masks, size) if masks else {}


def atomic_save_pil_to_cache(img: Image.Image, cache_dir: str, name: str = "image", format: str = "webp") -> str:
    """Gradio's ``processing_utils.save_pil_to_cache``, but the file appears atomically (temporary name + rename).

    Gradio 6 re-writes an output's content-addressed file in place on every request (truncate, then write), so a
    client still downloading the same file from an earlier identical request (two users clicking one example)
    gets a truncated body: "peer closed connection without sending complete message body", found by
    tests/test_space_load.py. After a rename a reader sees the old file or the new one, both complete and equal.
    """
    data = processing_utils.encode_pil_to_bytes(img, format)
    target = (Path(cache_dir) / processing_utils.hash_bytes(data) / f"{name}.{format}").resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{uuid.uuid4().hex}.{target.name}")
    temporary.write_bytes(data)
    os.replace(temporary, target)
    return str(target)


INTRO = """# CheXanatomy: chest X-ray anatomy from a vision-language model
A PaliGemma-architecture model answers `segment <structure>` with box and mask tokens; a U-Net baseline answers
beside it. Both were trained on digitally reconstructed radiographs rendered from CT. **Research demo, not for
clinical use.** Sides are the patient's: *left lung* is on the image's right in a PA view."""


def build_demo(
    vlm: Segmenter | None,
    unet: Segmenter | None,
    examples_dir: Path | None = EXAMPLES_DIR,
    max_structures: int = MAX_STRUCTURES,
    concurrency: int = 1,
    queue_size: int = 64,
) -> gr.Blocks:
    """The Space's UI around ``vlm`` and ``unet`` (either may be None), queued.

    Args:
        vlm: a VLM ``Segmenter`` (``chexanatomy.inference``) or None.
        unet: a U-Net ``Segmenter`` or None.
        examples_dir: bundled examples (``NAME.png`` + ``NAME.npz``), None for none.
        max_structures: cap on structures per request ("all" included).
        concurrency: requests processed at once (the models are not copied per worker).
        queue_size: waiting requests beyond which new ones are refused.
    """
    processing_utils.save_pil_to_cache = atomic_save_pil_to_cache  # overlays are written through it
    examples = load_examples(examples_dir)
    app = SpaceApp(vlm, unet, examples, max_structures)
    with gr.Blocks(title="CheXanatomy") as demo:
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column(scale=1):
                inputs, button = _input_components(app, examples)
            with gr.Column(scale=2):
                overlays, timing, notes = _result_components(app)
        table, answers = _detail_components(app)
        outputs = [*overlays, table, answers, timing, notes]
        button.click(app.segment, inputs, outputs, api_name="segment")
    demo.queue(default_concurrency_limit=concurrency, max_size=queue_size)
    return demo


def _input_components(app: SpaceApp, examples: list[Example]) -> tuple[list, gr.Button]:
    """File upload, region and structure pickers, the run button and the examples."""
    upload = gr.File(
        label="Radiograph (PNG, JPEG or DICOM incl. MONOCHROME1 / 16-bit)", type="filepath", elem_id="radiograph"
    )
    regions = gr.CheckboxGroup(
        [("all structures", ALL), *((r, r) for r in REGIONS)], label="Whole regions", elem_id="regions"
    )
    choices = [(f"{region_of(n)} · {structure_label(n)}", n) for n in app.offered]
    default = [n for n in DEFAULT_STRUCTURES if n in app.offered]
    picks = gr.Dropdown(
        choices,
        value=default,
        multiselect=True,
        label="Structures",
        elem_id="structures",
        info=f"Added to the regions; at most {app.max_structures} per request.",
    )
    button = gr.Button("Segment", variant="primary", elem_id="run")
    if examples:
        gr.Examples(
            [[str(e.image)] for e in examples],
            inputs=[upload],
            example_labels=[e.label for e in examples],
            label="Examples: real radiographs (no ground truth) and held-out renderings (with ground truth, Dice)",
            cache_examples=False,
        )
    return [upload, regions, picks], button


def _result_components(app: SpaceApp) -> tuple[list, gr.Textbox, gr.Textbox]:
    """Both overlays side by side (the U-Net's hidden without a U-Net), the time taken and the notes."""
    colours = color_map(app.offered)
    with gr.Row():
        overlays = [
            gr.AnnotatedImage(
                label=f"{title} overlay (click a legend entry to highlight it)",
                color_map=colours,
                visible=model is not None,
                elem_id=f"overlay-{title.lower().replace('-', '')}",
            )
            for title, model in app.slots
        ]
    timing = gr.Textbox(label="Time taken", elem_id="timing")
    notes = gr.Textbox(label="Notes", lines=2, elem_id="notes")
    return overlays, timing, notes


def _detail_components(app: SpaceApp) -> tuple[gr.Dataframe, gr.Textbox]:
    """The per-structure table (full width) and the VLM's raw answers."""
    table = gr.Dataframe(
        headers=table_headers(app.models),
        label="Per structure: area, box (y0, x0, y1, x1 px; y1/x1 exclusive), validity, Dice (examples only)",
        interactive=False,
        max_height=800,
        elem_id="table",
    )
    answers = gr.Textbox(label="Raw VLM answers (<loc> box + <seg> mask tokens)", lines=6, elem_id="answers")
    return table, answers


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


def load_model(name: str, kind: str, device: str | None = None) -> Segmenter | None:
    """A ``Segmenter`` for ``name`` (a folder, a Hub id, "bundled-vlm"/"bundled-unet" or "none" -> None).

    A bundled model missing from this installation (e.g. on Spaces) falls back to the Hub release ``HUB_MODELS``.

    Raises:
        FileNotFoundError: naming ``name`` when it is no model folder and no reachable Hub model (offline: not cached);
            a mistyped local path never goes to the Hub (``chexanatomy.locate``).
    """
    if name.lower() == "none":
        return None
    if name == f"bundled-{kind}":
        from chexanatomy.inference import bundled_model_path

        try:
            bundled_model_path(kind)
        except FileNotFoundError:
            logger.warning("no bundled %s in this installation; loading %s from the Hub", kind, HUB_MODELS[kind])
            name = HUB_MODELS[kind]
    return load_segmenter(name, device=device)


def launch(
    demo: gr.Blocks,
    host: str = "127.0.0.1",
    port: int | None = None,
    block: bool = True,
    examples_dir: Path | None = EXAMPLES_DIR,
):
    """Start the server (never a share link); ``block=False`` returns at once (tests, benchmarks)."""
    theme = gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
    )
    return demo.launch(
        server_name=host,
        server_port=port,
        share=False,
        show_error=True,
        prevent_thread_lock=not block,
        quiet=not block,
        allowed_paths=[str(examples_dir)] if examples_dir else None,
        max_file_size="128mb",
        ssr_mode=False,
        theme=theme,
    )


def make_parser() -> argparse.ArgumentParser:
    """Command-line options (model defaults from ``CHEXANATOMY_VLM``/``CHEXANATOMY_UNET``)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--vlm",
        default=os.environ.get("CHEXANATOMY_VLM", "bundled-vlm"),
        help="VLM folder, Hub id, 'bundled-vlm' or 'none'",
    )
    parser.add_argument(
        "--unet",
        default=os.environ.get("CHEXANATOMY_UNET", "bundled-unet"),
        help="U-Net folder, Hub id, 'bundled-unet' or 'none'",
    )
    parser.add_argument(
        "--host",
        default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        help="interface to listen on (Spaces sets GRADIO_SERVER_NAME=0.0.0.0)",
    )
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: CUDA when available)")
    parser.add_argument("--examples_dir", default=str(EXAMPLES_DIR))
    parser.add_argument("--max_structures", type=int, default=MAX_STRUCTURES)
    parser.add_argument("--concurrency", type=int, default=1, help="requests processed at once")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Load the models, build the UI and serve it until interrupted."""
    parser = make_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own start-up probes
    try:
        vlm, unet = load_model(args.vlm, "vlm", args.device), load_model(args.unet, "unet", args.device)
    except FileNotFoundError as error:
        parser.exit(2, f"error: {error}\n")  # a usage error: one line, no traceback
    demo = build_demo(vlm, unet, Path(args.examples_dir), args.max_structures, args.concurrency)
    logger.info("serving VLM=%s U-Net=%s on http://%s:%d", args.vlm, args.unet, args.host, args.port)
    launch(demo, args.host, args.port, examples_dir=Path(args.examples_dir))


if __name__ == "__main__":
    main()
