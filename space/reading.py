"""Reading an uploaded radiograph: a grey "L" image the models can take, and notes on what was done to it.

The file is read by ``chexanatomy.radiograph_io.read_radiograph`` (the one rule for PNG, JPEG, 16-bit and DICOM:
at most ``MAX_IMAGE_PIXELS`` (50 MP) before decoding, EXIF orientation, alpha flattened onto black, DICOM modality
and VOI LUTs, MONOCHROME1 inverted). Here the Space adds its own limits: at least ``MIN_SIDE`` px per side, the long
side downscaled to ``MAX_SIDE`` (1,024 px) before inference. Each broken rule is an ``InputError`` whose message is
shown to the user, never a crash.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from chexanatomy.inference import grey_image
from chexanatomy.radiograph_io import MAX_PIXELS, MIN_SIDE, RadiographError, read_radiograph

from . import InputError

MAX_IMAGE_PIXELS = MAX_PIXELS  # 50 MP: a 16-bit 7,000 x 7,000 detector image still fits
MAX_SIDE = 1024  # long side for inference; both models work at <= 448 px internally


def read_upload(path: str | Path) -> tuple[Image.Image, list[str]]:
    """A grey "L" image from a PNG/JPEG/any PIL format or a DICOM file, and notes on what was done to it.

    Raises:
        InputError: for files that are not images, damaged files, images over ``MAX_IMAGE_PIXELS`` and blank images
            (every pixel black: all black, NaN or infinite pixels, a NaN DICOM rescale slope).
    """
    path = Path(path)
    try:
        levels, notes = read_radiograph(path, MAX_IMAGE_PIXELS)
    except (RadiographError, FileNotFoundError) as error:
        raise InputError(str(error)) from None
    try:
        image = grey_image(levels)
    except ValueError as error:  # grey_image's refusals (a 1x1 image)
        raise InputError(f"{path.name} cannot be segmented: {error}.") from None
    # Blank: no finite grey level above black. NaN pixels, a NaN rescale slope and a 16-bit image of one value all
    # read as black (grey_levels' min-max rule). A uniform grey picture is still segmented (it may be a test card).
    if not np.isfinite(levels).all() or not levels.max() > 0:
        raise InputError(
            f"{path.name} is blank: every pixel is black (an all-black image, NaN or infinite pixel values, or a NaN "
            "DICOM rescale slope); there is nothing to segment."
        )
    return image, notes


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
