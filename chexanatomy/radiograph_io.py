"""Reading radiograph files: PNG, JPEG (any PIL format, 8 or 16 bit) and DICOM, one rule for every part.

    from chexanatomy.radiograph_io import read_radiograph
    levels, notes = read_radiograph("cxr.dcm")     # float32 [H, W] in [0, 1], larger = brighter; what was done

The rule (the Space, the real-radiograph evaluation and the domain-gap study all read files through it):

* Size: at most ``max_pixels`` (``MAX_PIXELS``, 50 MP: a 16-bit 7,000 x 7,000 detector image fits), checked from
  the header before decoding (a larger image is refused as a possible decompression bomb), and the long side at most
  ``MAX_ASPECT`` times the short one (a 1 x 49,000,000 image is no radiograph).
* Pictures: EXIF orientation applied; transparency (RGBA, LA, PA, P with a transparent colour) composited onto
  black; then ``chexanatomy.masks.grey_levels`` (colour = BT.601 luma, 8 bit / 255, 16 bit min-max scaled).
* DICOM (``DICM`` at byte 128, or a ``.dcm``/``.dicom`` name): the first frame; the modality LUT (rescale slope
  and intercept, or a modality LUT sequence); then the first VOI LUT or window when the file carries one
  (pydicom's ``apply_voi_lut``); MONOCHROME1 inverted (``v -> max + min - v``, so that bone is bright); then
  min-max scaled to [0, 1]. Colour DICOM is reduced to luma like a picture. pydicom is imported only here.

Frontal views are returned as stored: radiological convention (the patient's right on the image left) is the
file's, nothing is flipped. Every refusal is a ``RadiographError`` (a ``ValueError``) whose one-line message
starts with the file name; a missing file is a ``FileNotFoundError``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .masks import grey_levels

MAX_PIXELS = 50_000_000
MIN_SIDE = 32  # px; a radiograph smaller than 32 px per side holds no anatomy to segment (the Space's and eval's limit)
MAX_ASPECT = 10  # long side / short side; radiographs are near square, stitched full-spine or full-leg images ~4
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg")
DICOM_SUFFIXES = (".dcm", ".dicom")


class RadiographError(ValueError):
    """A file that cannot be read as a radiograph; the message names the file and says why, in one line."""


def read_radiograph(path: str | Path, max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, list[str]]:
    """Grey levels of a radiograph file and notes on what was done to it (see the module docstring for the rule).

    Returns:
        (levels, notes): float32 [H, W] in [0, 1], larger = brighter; sentences such as "MONOCHROME1 DICOM:
        intensities were inverted."

    Raises:
        FileNotFoundError: when ``path`` is not a file.
        RadiographError: for files that are not images, damaged files, undecodable DICOM and images over
            ``max_pixels``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    if is_dicom(path):
        return _read_dicom(path, max_pixels)
    image, notes = flatten_alpha(open_image(path, max_pixels))
    return grey_levels(image), notes


def is_dicom(path: Path) -> bool:
    """True for a DICOM file: the ``DICM`` preamble marker, or a ``.dcm``/``.dicom`` name (raw DICOM has none)."""
    with Path(path).open("rb") as f:
        head = f.read(132)
    return head[128:132] == b"DICM" or Path(path).suffix.lower() in DICOM_SUFFIXES


def open_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """A fully decoded PIL image (any mode, EXIF orientation applied), refused over ``max_pixels`` before decoding.

    Raises:
        FileNotFoundError: when ``path`` is not a file.
        RadiographError: for files that are not images, damaged files and images over ``max_pixels``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the limit is checked below
            with Image.open(path) as opened:
                _check_pixels(path, opened.size[0] * opened.size[1], max_pixels)
                _check_aspect(path, *opened.size)
                opened.load()
                return ImageOps.exif_transpose(opened)
    except Image.DecompressionBombError as error:
        raise RadiographError(_too_large(path, _pixels_in(error), max_pixels)) from None
    except UnidentifiedImageError:
        raise RadiographError(f"{path.name} is not an image: a PNG, JPEG or DICOM radiograph is expected.") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        if isinstance(error, RadiographError):
            raise
        raise RadiographError(f"{path.name}: cannot decode image; it is truncated or damaged ({error}).") from None


def flatten_alpha(image: Image.Image) -> tuple[Image.Image, list[str]]:
    """The image composited onto black when it has transparency (RGBA, LA, PA or P with a transparent colour)."""
    if image.mode not in ("RGBA", "LA", "PA") and "transparency" not in image.info:
        return image, []
    black = Image.new("RGBA", image.size, (0, 0, 0, 255))
    flat = Image.alpha_composite(black, image.convert("RGBA")).convert("RGB")
    return flat, ["The image had an alpha channel: it was flattened onto black."]


def _check_pixels(path: Path, pixels: int, max_pixels: int) -> None:
    if pixels > max_pixels:
        raise RadiographError(_too_large(path, pixels, max_pixels))


def _check_aspect(path: Path, width: int, height: int) -> None:
    """``RadiographError`` from the header, before decoding, for a shape no radiograph has (1 x 49,000,000 px)."""
    if max(width, height) > MAX_ASPECT * max(1, min(width, height)):
        raise RadiographError(
            f"{path.name}: {width}x{height} pixels is too small (or too narrow) for a radiograph: the long side may "
            f"be at most {MAX_ASPECT} times the short one; refused before decoding."
        )


def _too_large(path: Path, pixels: int | None, max_pixels: int) -> str:
    """Exact pixels, not rounded to megapixels: an image just over the limit must not read "50 ...; at most 50"."""
    count = f"the image has {pixels:,} pixels; " if pixels else ""
    return (
        f"{path.name} is too large: {count}at most {max_pixels / 1e6:.0f} megapixels are accepted (larger files are "
        "refused as possible decompression bombs)."
    )


def _pixels_in(error: Exception) -> int | None:
    """The pixel count in PIL's bomb message ("Image size (400000000 pixels) exceeds ..."), None when absent."""
    words = [w for w in str(error).replace("(", " ").split() if w.isdigit()]
    return int(words[0]) if words else None


def _read_dicom(path: Path, max_pixels: int) -> tuple[np.ndarray, list[str]]:
    """Grey levels of a DICOM radiograph's first frame (modality LUT, VOI LUT/window, MONOCHROME1 inverted)."""
    try:
        import pydicom
    except ImportError:
        raise RadiographError(f"{path.name}: reading DICOM needs pydicom (pip install pydicom).") from None
    try:
        ds = pydicom.dcmread(path, force=True)
        rows, cols, frames = int(ds.Rows), int(ds.Columns), int(ds.get("NumberOfFrames", 1) or 1)
    except Exception as error:  # pydicom raises many kinds on garbage; all mean "not a usable DICOM"
        raise RadiographError(f"{path.name} is not a readable DICOM image ({type(error).__name__}: {error}).") from None
    if rows * cols * frames > max_pixels:
        raise RadiographError(
            f"{path.name} is too large: {rows}x{cols} pixels x {frames} frame(s); at most "
            f"{max_pixels / 1e6:.0f} megapixels are accepted."
        )
    _check_aspect(path, cols, rows)
    try:
        pixels = ds.pixel_array
    except Exception as error:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "unknown")
        raise RadiographError(
            f"{path.name}: the DICOM pixel data could not be decoded (transfer syntax {syntax}: {error})."
        ) from None
    values, notes = dicom_display_values(pixels[0] if frames > 1 else pixels, ds)
    return grey_levels(values), notes


def dicom_display_values(pixels: np.ndarray, ds) -> tuple[np.ndarray, list[str]]:
    """Display values of one DICOM frame: float32 [H, W], larger = brighter, min-max scaled to [0, 1].

    Colour frames ([H, W, 3], photometric RGB/YBR as pydicom decodes them) are returned as they are, with a note.
    """
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if not photometric.startswith("MONOCHROME"):
        return pixels, [f"DICOM {photometric} image converted to grey."]
    notes = []
    values = apply_modality_lut(pixels, ds)
    if np.issubdtype(values.dtype, np.floating) and np.array_equal(values, np.round(values)):
        values = values.astype(np.int64)  # whole numbers (slope 1): a VOI LUT indexes them, floats would not
    if "WindowCenter" in ds or "VOILUTSequence" in ds:
        values = apply_voi_lut(values, ds, index=0)
        notes.append("The DICOM window (VOI LUT) was applied.")
    values = np.asarray(values, dtype=np.float32)
    low, high = float(values.min()), float(values.max())
    if photometric == "MONOCHROME1":  # low values are white: invert so that bone is bright
        values = high + low - values
        notes.append("MONOCHROME1 DICOM: intensities were inverted.")
    return (values - low) / (high - low) if high > low else np.zeros_like(values), notes


__all__ = [
    "DICOM_SUFFIXES",
    "MAX_PIXELS",
    "MIN_SIDE",
    "PICTURE_SUFFIXES",
    "RadiographError",
    "dicom_display_values",
    "flatten_alpha",
    "is_dicom",
    "open_image",
    "read_radiograph",
]
