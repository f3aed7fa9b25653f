"""Reading an uploaded radiograph: a grey "L" image the models can take, and notes on what was done to it.

Input rules (each broken rule is an ``InputError`` whose message is shown to the user, never a crash): at most
``MAX_IMAGE_PIXELS`` (50 MP) before decoding (a larger header is treated as a decompression bomb), at least
``MIN_SIDE`` px per side, long side downscaled to ``MAX_SIDE`` (1,024 px) before inference, alpha flattened onto
black, DICOM rescaled (slope/intercept), windowed when the file carries a window, and MONOCHROME1 inverted.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image, ImageOps, UnidentifiedImageError
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from chexanatomy.inference import grey_image

from . import InputError

MAX_IMAGE_PIXELS = 50_000_000  # 50 MP: a 16-bit 7,000 x 7,000 detector image still fits
MAX_SIDE = 1024  # long side for inference; both models work at <= 448 px internally
MIN_SIDE = 32
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS  # PIL warns above this and raises above twice it; both are refused


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
