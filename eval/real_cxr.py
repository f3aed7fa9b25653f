"""Real chest radiograph benchmarks with anatomy masks, read from their published file layouts.

Every loader yields one record per image::

    {"id": str,                                  # the dataset's image id (file stem)
     "image": PIL.Image,                          # mode "L" (8-bit), [H, W]; air dark, bone bright
     "masks": {structure name: bool [H, W]},     # our vocabulary names, patient sides
     "spacing_mm": (row_mm, col_mm) or None,      # pixel size of this grid; None when the dataset has none
     "source": "jsrt" | "montgomery" | "shenzhen" | "chexmask"}

Masks and image always share one grid, indexed ``(y, x)``. ``max_side`` (every loader) shrinks image and masks
together, keeping the aspect ratio, so that the longer side is at most ``max_side``; ``spacing_mm`` is scaled to
match. Images are area-averaged (PIL ``BOX``), masks are area-averaged then thresholded at 0.5.

Laterality: our names are the patient's sides (``lung_left`` is the patient's left lung). All four datasets
are frontal PA radiographs displayed in radiological convention, so the patient's right is on the image's
*left*. Each loader's docstring says which file or column means which side.

Lung definition: these datasets draw the radiographic lung field (SCR: the pixels whose ray passes the lung but not
the heart, the mediastinum, the aorta or the structures below the diaphragm); masks projected from CT contain the
whole lung. :data:`LUNG_DEFINITION` records the definition per source; compare a CT-projected lung with
:func:`radiographic_lung_field` (lung minus every occluder, ``chexanatomy.anatomy.LUNG_FIELD_OCCLUDERS``), or ask a
model trained on a 2.0 corpus for ``lung_field_left``/``lung_field_right`` directly.

Written by hand: none of these datasets ships a reader (JSRT is headerless raw data, CheXmask is run-length
encoded CSV), and they are research-licensed downloads, so nothing here fetches them.

Example (paths as distributed)::

    from eval.real_cxr import load_jsrt_scr
    for record in load_jsrt_scr("JSRT/All247images", "SCR", max_side=512):
        ...
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from chexanatomy.anatomy import STRUCTURES
from chexanatomy.inference import grey_image
from chexanatomy.radiograph_io import PICTURE_SUFFIXES, open_image, read_radiograph

Record = dict[str, Any]

LUNG_DEFINITION = {
    # SCR data description: lung field = pixels whose ray passes the lung but not the heart, mediastinum, aorta
    # or structures below the diaphragm.
    "jsrt": "scr",
    # Hand-drawn lung fields following the cardiac and mediastinal borders and the domes, SCR style (no written
    # definition was available to us; visual convention of the published masks).
    "montgomery": "scr",
    "shenzhen": "scr",
    # HybridGNet contours, trained on SCR-style landmarks.
    "chexmask": "scr",
}
# How a model's lungs are turned into what a reference draws (python -m eval --lung_definitions):
LUNG_DEFINITIONS = {
    "scr": "radiographic lung field: the model's lung_field_* when it has them, else lung minus every occluder",
    "heart": "lung minus the heart only (the definition of releases before the 2.0 corpus)",
    "full": "the whole projected lung, nothing removed",
}


# JSRT: 2048 x 2048 raw, big-endian 16-bit words holding 12-bit data, no header, 0.175 mm pixels.
JSRT_SHAPE = (2048, 2048)
JSRT_PIXEL_MM = 0.175
JSRT_MAX_VALUE = 4095

# SCR mask folder -> our structure. SCR names are the patient's sides ("by convention, a chest radiograph is
# displayed as if one is facing the patient. This means that the right lung and clavicle are on the left in
# the image", https://www.isi.uu.nl/Research/Databases/SCR/data.php).
SCR_FOLDERS = {
    "left lung": "lung_left",
    "right lung": "lung_right",
    "heart": "heart",
    "left clavicle": "clavicle_left",
    "right clavicle": "clavicle_right",
}

MONTGOMERY_PIXEL_MM = 0.0875

# CheXmask column -> our structure; the columns name the patient's sides (see load_chexmask).
CHEXMASK_MASK_COLUMNS = {"Left Lung": "lung_left", "Right Lung": "lung_right", "Heart": "heart"}
CHEXMASK_ID_COLUMNS = ("ImageID", "Image ID", "dicom_id")
CHEXMASK_QUALITY_COLUMN = "Dice RCA (Mean)"


def _check_vocabulary() -> None:
    names = {*SCR_FOLDERS.values(), *CHEXMASK_MASK_COLUMNS.values(), "lungs"}
    unknown = sorted(names - set(STRUCTURES))
    if unknown:
        raise ImportError(f"eval.real_cxr maps onto structure names missing from chexanatomy.anatomy: {unknown}")


_check_vocabulary()


# --------------------------------------------------------------------------------------------------------------
# shared helpers


def radiographic_lung_field(lung_mask: np.ndarray, occluder_masks) -> np.ndarray:
    """The radiographic lung field of a full-lung mask: the lung minus every pixel an occluder covers.

    Real-radiograph lung masks (JSRT/SCR, Montgomery, Shenzhen, CheXmask) exclude the lung behind the heart, the
    mediastinum, the aorta and the abdomen below the domes; masks projected from CT include it. Pass the projected
    (or predicted) masks of ``chexanatomy.anatomy.LUNG_FIELD_OCCLUDERS`` for the SCR definition, or the heart alone
    for the older heart-only one.

    Args:
        lung_mask: bool [H, W], the projected lung (one side or both).
        occluder_masks: bool [H, W] masks on the same grid (any number, also none).

    Returns:
        bool [H, W]: ``lung_mask`` and none of the occluders.
    """
    lung = np.asarray(lung_mask, dtype=bool)
    if lung.ndim != 2:
        raise ValueError(f"lung mask {lung.shape} must be a 2-D mask")
    out = lung.copy()
    for occluder in occluder_masks:
        occluder = np.asarray(occluder, dtype=bool)
        if occluder.shape != lung.shape:
            raise ValueError(f"lung mask {lung.shape} and occluder mask {occluder.shape} must have one shape")
        out &= ~occluder
    return out


def _binarise(arr: np.ndarray) -> np.ndarray:
    """A stored mask (0/255, 0/1 or palette) as bool: above half its maximum."""
    top = int(arr.max()) if arr.size else 0
    return arr > (0 if top <= 1 else top / 2)


def _read_mask(path: Path) -> np.ndarray:
    """A binary mask image file (PNG, GIF) as bool [H, W]."""
    image = open_image(path)
    arr = np.asarray(image) if image.mode in ("I", "I;16", "I;16B", "I;16L", "1") else np.asarray(image.convert("L"))
    if arr.ndim != 2:
        raise ValueError(f"{path}: expected a single-channel mask, got array shape {arr.shape}")
    return _binarise(arr)


def _check_grid(mask: np.ndarray, mask_path: Path, shape: tuple[int, int], image_path: Path) -> None:
    if mask.shape != shape:
        raise ValueError(
            f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} (W x H) but image {image_path} is "
            f"{shape[1]}x{shape[0]}; mask and image must be the same size"
        )


def _resize_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Area-resample a bool [H, W] mask to ``shape`` = (rows, cols), threshold 0.5."""
    if mask.shape == shape:
        return mask
    soft = Image.fromarray(mask.astype(np.float32), mode="F").resize((shape[1], shape[0]), Image.BOX)
    return np.asarray(soft) >= 0.5


def _shrink(record: Record, max_side: int | None) -> Record:
    """Downscale image and masks together so the longer side is at most ``max_side``; scale the spacing."""
    width, height = record["image"].size
    if max_side is None or max(height, width) <= max_side:
        return record
    scale = max_side / max(height, width)
    shape = (max(1, round(height * scale)), max(1, round(width * scale)))
    record["image"] = record["image"].resize((shape[1], shape[0]), Image.BOX)
    record["masks"] = {name: _resize_mask(m, shape) for name, m in record["masks"].items()}
    if record["spacing_mm"] is not None:
        row_mm, col_mm = record["spacing_mm"]
        record["spacing_mm"] = (row_mm * height / shape[0], col_mm * width / shape[1])
    return record


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: {what} folder not found")
    return path


def _wanted(ids: Iterable[str] | None) -> Callable[[str], bool]:
    keep = None if ids is None else set(ids)
    return lambda image_id: keep is None or image_id in keep


# --------------------------------------------------------------------------------------------------------------
# JSRT + SCR


def read_jsrt_image(path: str | Path) -> np.ndarray:
    """Read a raw JSRT ``.IMG`` file.

    The format has no header: 2048 x 2048 big-endian 16-bit words holding 12-bit values, 0.175 mm pixels.

    Returns:
        uint16 [2048, 2048] raw values in 0..4095, indexed (y, x).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file size is not 2048*2048*2 bytes (truncated, or not a JSRT image), or values exceed
            12 bits (typically a little-endian re-export).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: JSRT image not found")
    expected = JSRT_SHAPE[0] * JSRT_SHAPE[1] * 2
    size = path.stat().st_size
    if size != expected:
        raise ValueError(
            f"{path}: {size} bytes, expected {expected} (2048x2048 big-endian 16-bit, no header); "
            "the file is truncated or not a JSRT .IMG"
        )
    raw = np.fromfile(path, dtype=">u2").reshape(JSRT_SHAPE)
    if int(raw.max()) > JSRT_MAX_VALUE:
        raise ValueError(
            f"{path}: values up to {int(raw.max())} exceed 12 bits; JSRT .IMG files are big-endian 12-bit data "
            "(is this a little-endian re-export?)"
        )
    return raw.astype(np.uint16)


def jsrt_to_display(raw: np.ndarray, invert: bool = True) -> np.ndarray:
    """JSRT raw 12-bit values -> uint8 display values, linearly.

    Raw JSRT values run opposite to the usual display: the widely used conversion is ``1 - raw / 4096`` (e.g.
    ``preprocess_JSRT.py`` in imlab-uiip/lung-segmentation-2d). ``invert=True`` does the same, giving air dark
    and bone bright, as in our DRRs; check one image by eye if your copy of JSRT was re-exported.

    Args:
        raw: uint16 [H, W] in 0..4095.
        invert: map 4095 -> 0 (True) or 0 -> 0 (False).

    Returns:
        uint8 [H, W].
    """
    values = np.clip(raw.astype(np.float32), 0, JSRT_MAX_VALUE) / JSRT_MAX_VALUE
    if invert:
        values = 1.0 - values
    return np.round(values * 255).astype(np.uint8)


def _scr_mask_roots(scr_dir: Path) -> list[Path]:
    """Folders holding the five SCR structure folders.

    That is ``scr_dir`` itself, ``scr_dir/masks``, or every nested ``masks`` folder (one distribution splits them
    as ``scratch/fold1/masks`` and ``scratch/fold2/masks``).
    """
    _require_dir(scr_dir, "SCR")
    if (scr_dir / "left lung").is_dir():
        roots = [scr_dir]
    else:
        roots = sorted({p.parent for p in scr_dir.rglob("left lung") if p.is_dir()})
    if not roots:
        raise FileNotFoundError(
            f"{scr_dir}: no SCR mask folders found; expected e.g. {scr_dir}/masks/left lung/JPCLN001.gif"
        )
    for root in roots:
        for folder in SCR_FOLDERS:
            _require_dir(root / folder, f"SCR mask ({folder!r})")
    return roots


def _find_scr_mask(roots: list[Path], folder: str, image_id: str) -> Path:
    for root in roots:
        path = root / folder / f"{image_id}.gif"
        if path.is_file():
            return path
    raise FileNotFoundError(f"SCR mask {folder}/{image_id}.gif not found under {[str(r) for r in roots]}")


def _jsrt_record(image_path: Path, roots: list[Path], invert: bool) -> Record:
    image_id = image_path.stem
    masks, mask_shape, first_path = {}, None, None
    for folder, name in SCR_FOLDERS.items():
        path = _find_scr_mask(roots, folder, image_id)
        mask = _read_mask(path)
        if mask_shape is None:
            mask_shape, first_path = mask.shape, path
        _check_grid(mask, path, mask_shape, first_path)
        masks[name] = mask
    display = Image.fromarray(jsrt_to_display(read_jsrt_image(image_path), invert), mode="L")
    # the image goes to the mask grid (1024 x 1024 in SCR): area-averaged, so 0.35 mm pixels at 1024
    display = display.resize((mask_shape[1], mask_shape[0]), Image.BOX)
    spacing = (JSRT_PIXEL_MM * JSRT_SHAPE[0] / mask_shape[0], JSRT_PIXEL_MM * JSRT_SHAPE[1] / mask_shape[1])
    return {"id": image_id, "image": display, "masks": masks, "spacing_mm": spacing, "source": "jsrt"}


def load_jsrt_scr(
    jsrt_dir: str | Path,
    scr_dir: str | Path,
    *,
    ids: Iterable[str] | None = None,
    max_side: int | None = None,
    invert: bool = True,
) -> Iterator[Record]:
    """JSRT radiographs with the SCR lung, heart and clavicle masks.

    Layout: ``jsrt_dir/JPCLN001.IMG`` (raw, see :func:`read_jsrt_image`) and
    ``scr_dir/masks/{left lung,right lung,heart,left clavicle,right clavicle}/JPCLN001.gif`` (also found as
    ``scr_dir/{left lung,...}`` or in nested ``.../fold1/masks``). SCR masks are 1024 x 1024.

    Laterality: SCR folder names are the patient's sides (SCR data description: the right lung and clavicle are
    on the left in the image). So ``left lung`` -> ``lung_left``, on the image's right; ``right clavicle`` ->
    ``clavicle_right``, on the image's left. ``heart`` -> ``heart``.

    Grid: the 2048 x 2048 image is area-downsampled to the mask grid (1024 x 1024 -> 0.35 mm pixels); masks
    are never upsampled. Lung fields are radiographic lung fields (``LUNG_DEFINITION["jsrt"]``); the
    heart is the whole cardiac projection. SCR outlines only part of each clavicle (see the SCR data
    description), so expect a projected whole-bone clavicle to score lower.

    Args:
        jsrt_dir: folder of ``.IMG`` files (``All247images``).
        scr_dir: SCR root (holding ``masks/``) or the ``masks`` folder itself.
        ids: only these image ids (file stems, e.g. ``"JPCLN001"``); default all.
        max_side: optional further downscale (see module docstring).
        invert: display air dark (see :func:`jsrt_to_display`).

    Yields:
        Records (module docstring) with masks ``lung_left``, ``lung_right``, ``heart``, ``clavicle_left``,
        ``clavicle_right``, ``source="jsrt"``.

    Raises:
        FileNotFoundError: a missing folder, image or mask file (named in the message).
        ValueError: a truncated/unreadable file or masks of different sizes.
    """
    jsrt_dir = _require_dir(Path(jsrt_dir), "JSRT image")
    roots = _scr_mask_roots(Path(scr_dir))
    images = sorted(p for p in jsrt_dir.iterdir() if p.suffix.lower() == ".img")
    if not images:
        raise FileNotFoundError(f"{jsrt_dir}: no JSRT .IMG files")
    wanted = _wanted(ids)
    for image_path in images:
        if wanted(image_path.stem):
            yield _shrink(_jsrt_record(image_path, roots, invert), max_side)


# --------------------------------------------------------------------------------------------------------------
# Montgomery


def _sides_by_position(a: np.ndarray, b: np.ndarray, a_path: Path, b_path: Path) -> dict[str, np.ndarray]:
    """Two one-lung masks of a PA image -> {"lung_right", "lung_left"} by which side of the image each is on."""
    if not a.any() or not b.any():
        raise ValueError(f"{a_path if not a.any() else b_path}: empty lung mask")
    centre_a, centre_b = np.argwhere(a)[:, 1].mean(), np.argwhere(b)[:, 1].mean()
    midline = a.shape[1] / 2
    if (centre_a < midline) == (centre_b < midline):
        raise ValueError(
            f"{a_path} and {b_path}: both lung masks lie on the same half of the image (column centroids "
            f"{centre_a:.0f}, {centre_b:.0f}, width {a.shape[1]}); cannot tell the sides apart"
        )
    image_left, image_right = (a, b) if centre_a < centre_b else (b, a)
    # PA view, radiological display: the image's left shows the patient's right
    return {"lung_right": image_left, "lung_left": image_right}


def _montgomery_record(image_path: Path, left_dir: Path, right_dir: Path) -> Record:
    image = grey_image(read_radiograph(image_path)[0])
    shape = (image.size[1], image.size[0])
    paths = (left_dir / image_path.name, right_dir / image_path.name)
    masks = []
    for path in paths:
        mask = _read_mask(path)
        _check_grid(mask, path, shape, image_path)
        masks.append(mask)
    return {
        "id": image_path.stem,
        "image": image,
        "masks": _sides_by_position(masks[0], masks[1], *paths),
        "spacing_mm": (MONTGOMERY_PIXEL_MM, MONTGOMERY_PIXEL_MM),
        "source": "montgomery",
    }


def load_montgomery(
    root: str | Path, *, ids: Iterable[str] | None = None, max_side: int | None = None
) -> Iterator[Record]:
    """The Montgomery County set (NLM): PA radiographs with one mask per lung, 0.0875 mm pixels.

    Layout: ``root/CXR_png/MCUCXR_0001_0.png``, ``root/ManualMask/leftMask/MCUCXR_0001_0.png`` and
    ``root/ManualMask/rightMask/MCUCXR_0001_0.png`` (same size as the image).

    Laterality: we could not find a primary source (the NLM readme or Jaeger et al. 2014) stating whether
    ``leftMask``/``rightMask`` mean the patient's or the image's left, so the folder names are *not* used for
    the side. Instead, every image being PA, the mask whose column centroid is on the image's left becomes
    ``lung_right`` (patient's right) and the other ``lung_left``; a pair on the same half of the image is an
    error. Lung masks are radiographic lung fields (``LUNG_DEFINITION["montgomery"]``).

    Args:
        root: the ``MontgomerySet`` folder.
        ids: only these image ids (file stems); default all.
        max_side: optional downscale (the originals are about 4000 x 4900).

    Yields:
        Records with masks ``lung_left`` and ``lung_right``, ``source="montgomery"``.

    Raises:
        FileNotFoundError: a missing folder or mask file.
        ValueError: an unreadable file, a mask whose size differs from the image, an empty mask or two masks
            on the same side.
    """
    root = Path(root)
    image_dir = _require_dir(root / "CXR_png", "Montgomery image (CXR_png)")
    left_dir = _require_dir(root / "ManualMask" / "leftMask", "Montgomery mask (ManualMask/leftMask)")
    right_dir = _require_dir(root / "ManualMask" / "rightMask", "Montgomery mask (ManualMask/rightMask)")
    wanted = _wanted(ids)
    for image_path in sorted(image_dir.glob("*.png")):
        if wanted(image_path.stem):
            yield _shrink(_montgomery_record(image_path, left_dir, right_dir), max_side)


# --------------------------------------------------------------------------------------------------------------
# Shenzhen


def load_shenzhen(
    root: str | Path,
    *,
    mask_dir: str | Path | None = None,
    ids: Iterable[str] | None = None,
    max_side: int | None = None,
) -> Iterator[Record]:
    """The Shenzhen set (NLM) with its lung masks: one mask covering both lungs.

    Layout: ``root/CXR_png/CHNCXR_0001_0.png`` and ``root/mask/CHNCXR_0001_0_mask.png`` (same size). Only
    images that have a mask are yielded (not every Shenzhen image was segmented).

    Laterality: not applicable - the mask holds both lungs and maps to our derived structure ``lungs``.
    Lung masks are radiographic lung fields (``LUNG_DEFINITION["shenzhen"]``). No pixel size is published:
    ``spacing_mm`` is ``None``.

    Args:
        root: the ``ChinaSet_AllFiles`` folder (holding ``CXR_png``).
        mask_dir: folder of ``*_mask.png`` files; default ``root/mask``.
        ids: only these image ids (image file stems, e.g. ``"CHNCXR_0001_0"``); default all.
        max_side: optional downscale.

    Yields:
        Records with mask ``lungs``, ``source="shenzhen"``.

    Raises:
        FileNotFoundError: a missing folder, or a mask without its image.
        ValueError: an unreadable file or a mask whose size differs from the image.
    """
    root = Path(root)
    image_dir = _require_dir(root / "CXR_png", "Shenzhen image (CXR_png)")
    mask_dir = _require_dir(Path(mask_dir) if mask_dir is not None else root / "mask", "Shenzhen mask")
    wanted = _wanted(ids)
    for mask_path in sorted(mask_dir.glob("*_mask.png")):
        image_id = mask_path.name.removesuffix("_mask.png")
        if not wanted(image_id):
            continue
        image_path = image_dir / f"{image_id}.png"
        image = grey_image(read_radiograph(image_path)[0])
        mask = _read_mask(mask_path)
        _check_grid(mask, mask_path, (image.size[1], image.size[0]), image_path)
        record = {"id": image_id, "image": image, "masks": {"lungs": mask}, "spacing_mm": None, "source": "shenzhen"}
        yield _shrink(record, max_side)


# --------------------------------------------------------------------------------------------------------------
# CheXmask


def decode_chexmask_rle(rle: str, height: int, width: int) -> np.ndarray:
    """Decode one CheXmask run-length encoded mask.

    The convention of ``get_mask_from_RLE`` in the CheXmask code (``DataPostprocessing/utils.py`` in
    github.com/ngaggion/CheXmask-Database): space-separated ``start length`` pairs, ``start`` 1-indexed into the
    row-major (C-order) flattened ``[height, width]`` array. An empty string (or ``nan`` from a CSV reader) is
    an empty mask.

    Returns:
        bool [height, width], indexed (y, x).

    Raises:
        ValueError: an odd number of values, a non-integer, a start below 1 or a run past the end.
    """
    text = "" if rle is None else str(rle).strip()
    size = int(height) * int(width)
    if text in ("", "nan", "-1"):
        return np.zeros((int(height), int(width)), dtype=bool)
    try:
        runs = np.array(text.split(), dtype=np.int64)
    except ValueError as err:
        raise ValueError(f"RLE has a non-integer value: {err}") from err
    if runs.size % 2:
        raise ValueError(f"RLE has an odd number of values ({runs.size}); expected start/length pairs")
    starts, lengths = runs[0::2] - 1, runs[1::2]
    if (starts < 0).any() or (lengths < 0).any() or (starts + lengths > size).any():
        raise ValueError(f"RLE run outside a {height}x{width} mask (starts are 1-indexed, runs must end by {size})")
    edges = np.zeros(size + 1, dtype=np.int64)
    np.add.at(edges, starts, 1)
    np.add.at(edges, starts + lengths, -1)
    return (np.cumsum(edges[:-1]) > 0).reshape(int(height), int(width))


class _ImageIndex:
    """Finds the image of a CheXmask id under a root.

    Tries ``root/id`` and ``root/id.{png,jpg,jpeg}``, then the file name anywhere below the root (that index is
    built once, on the first miss).
    """

    def __init__(self, root: Path):
        self.root = _require_dir(root, "CheXmask images root")
        self._by_name: dict[str, Path] | None = None

    def __call__(self, image_id: str) -> Path:
        direct = [self.root / image_id, *(self.root / f"{image_id}{s}" for s in PICTURE_SUFFIXES)]
        for path in direct:
            if path.is_file():
                return path
        if self._by_name is None:
            files = (p for p in self.root.rglob("*") if p.suffix.lower() in PICTURE_SUFFIXES)
            self._by_name = {}
            for p in files:
                self._by_name.setdefault(p.name, p)
                self._by_name.setdefault(p.stem, p)
        name = Path(image_id).name
        if name in self._by_name:
            return self._by_name[name]
        raise FileNotFoundError(f"no image for CheXmask id {image_id!r} under {self.root} (by path or file name)")


def _chexmask_columns(header: list[str], csv_path: Path) -> str:
    """Check the CSV header; return the id column's name."""
    required = [CHEXMASK_QUALITY_COLUMN, *CHEXMASK_MASK_COLUMNS, "Height", "Width"]
    missing = [c for c in required if c not in header]
    id_column = next((c for c in CHEXMASK_ID_COLUMNS if c in header), None)
    if id_column is None:
        missing.append(" or ".join(CHEXMASK_ID_COLUMNS))
    if missing:
        raise ValueError(f"{csv_path}: not a CheXmask CSV, missing columns {missing}; found {header}")
    return id_column


def _quality(row: dict[str, str]) -> float:
    try:
        return float(row[CHEXMASK_QUALITY_COLUMN])
    except (TypeError, ValueError):
        return float("nan")


def _chexmask_record(row: dict[str, str], image_id: str, image_path: Path, csv_path: Path) -> Record:
    height, width = int(float(row["Height"])), int(float(row["Width"]))
    masks = {}
    for column, name in CHEXMASK_MASK_COLUMNS.items():
        try:
            masks[name] = decode_chexmask_rle(row[column], height, width)
        except ValueError as err:
            raise ValueError(f"{csv_path}: id {image_id!r}, column {column!r}: {err}") from err
    image = grey_image(read_radiograph(image_path)[0])
    if (image.size[1], image.size[0]) != (height, width):
        raise ValueError(
            f"{image_path}: image is {image.size[0]}x{image.size[1]} (W x H) but CheXmask id {image_id!r} has "
            f"masks of {width}x{height}; use the original-resolution images (or the CSV of the preprocessed ones)"
        )
    return {"id": image_id, "image": image, "masks": masks, "spacing_mm": None, "source": "chexmask"}


def load_chexmask(
    csv_path: str | Path,
    images_root: str | Path,
    *,
    min_quality: float | None = 0.7,
    ids: Iterable[str] | None = None,
    max_side: int | None = None,
    image_path: Callable[[str], Path] | None = None,
) -> Iterator[Record]:
    """CheXmask masks (HybridGNet lungs and heart, run-length encoded in a CSV) with their source images.

    Layout: one CheXmask CSV (columns ``ImageID`` or ``dicom_id``, ``Dice RCA (Mean)``, ``Dice RCA (Max)``,
    ``Landmarks``, ``Left Lung``, ``Right Lung``, ``Heart``, ``Height``, ``Width``), streamed row by row, and
    the source dataset's images (PNG/JPEG; CheXmask ships none) under ``images_root``. Masks are decoded with
    :func:`decode_chexmask_rle` at ``Height x Width``, which must equal the image size.

    Laterality: ``Left Lung`` is the patient's left lung, on the image's right (in the CheXmask example
    ``Example/LL_landmarks.txt`` the left-lung contour lies on the image's right half and has the cardiac
    notch). ``Left Lung`` -> ``lung_left``, ``Right Lung`` -> ``lung_right``, ``Heart`` -> ``heart``. Lungs
    are radiographic lung fields (``LUNG_DEFINITION["chexmask"]``). Pixel size varies by source: ``spacing_mm`` is
    ``None``.

    Args:
        csv_path: a CheXmask CSV (e.g. ``ChestX-Ray8.csv``).
        images_root: folder holding the source images.
        min_quality: keep rows whose ``Dice RCA (Mean)`` is at least this (the CheXmask authors advise 0.7);
            rows with a missing score are dropped. ``None`` keeps every row.
        ids: only these image ids; default all.
        max_side: optional downscale.
        image_path: maps an id to its image file, replacing the default lookup (``images_root/id``,
            ``images_root/id.png|.jpg|.jpeg``, then a recursive search by file name).

    Yields:
        Records with masks ``lung_left``, ``lung_right``, ``heart``, ``source="chexmask"``.

    Raises:
        FileNotFoundError: the CSV, the images root or an image is missing.
        ValueError: missing columns, a malformed RLE, or an image whose size differs from the masks.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"{csv_path}: CheXmask CSV not found")
    resolve = image_path or _ImageIndex(Path(images_root))
    wanted = _wanted(ids)
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # a mask's RLE is far longer than csv's 128 kB default
    with csv_path.open(newline="") as f:
        reader = csv.DictReader(f)
        id_column = _chexmask_columns(list(reader.fieldnames or []), csv_path)
        for row in reader:
            image_id = row[id_column]
            if not wanted(image_id):
                continue
            if min_quality is not None and not _quality(row) >= min_quality:
                continue
            yield _shrink(_chexmask_record(row, image_id, Path(resolve(image_id)), csv_path), max_side)


LOADERS = {
    "jsrt": load_jsrt_scr,
    "montgomery": load_montgomery,
    "shenzhen": load_shenzhen,
    "chexmask": load_chexmask,
}

__all__ = [
    "LOADERS",
    "LUNG_DEFINITION",
    "LUNG_DEFINITIONS",
    "decode_chexmask_rle",
    "jsrt_to_display",
    "load_chexmask",
    "load_jsrt_scr",
    "load_montgomery",
    "load_shenzhen",
    "read_jsrt_image",
    "radiographic_lung_field",
]
