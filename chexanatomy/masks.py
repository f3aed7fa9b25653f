"""Binary masks and grey images: overlap scores, tight boxes and grey levels, one rule each.

Depends on numpy only (no torch, no PIL import, no other ``chexanatomy`` module), so that self-contained
artifacts (the ``evaluate`` metric, the Space bundle) can ship this file unchanged beside their own code.

Conventions:

* A mask is an array indexed ``(y, x)`` = (row, column); any dtype is read as ``mask != 0``. Prediction and
  reference must have the same shape (score at the reference's resolution).
* Empty-mask rule: :func:`dice` and :func:`iou` are 1.0 when both masks are empty (an empty answer for an absent
  structure is right, as MONAI's ``DiceMetric(ignore_empty=False)`` scores it) and 0.0 when exactly one is.
* A box is ``(y0, x0, y1, x1)`` in pixels, ``y0``/``x0`` inclusive and ``y1``/``x1`` exclusive; an empty mask
  has no box (``None``).
* Grey levels: larger = brighter, float32 in [0, 1] (see :func:`grey_levels` for how each input maps there).
"""

from __future__ import annotations

from typing import Any

import numpy as np

Box = tuple[int, int, int, int]

# ITU-R BT.601 luma weights, the ones PIL's ``convert("L")`` uses: one rule for colour images and colour arrays.
LUMA_RGB = (0.299, 0.587, 0.114)
# PIL modes whose array is the grey value itself (bilevel, 8-bit, 32-bit integer, float, 16-bit).
_GREY_MODES = ("1", "L", "I", "F", "I;16", "I;16B", "I;16L", "I;16N")


def _pair(pred: Any, ref: Any) -> tuple[np.ndarray, np.ndarray]:
    pred, ref = np.asarray(pred) != 0, np.asarray(ref) != 0
    if pred.shape != ref.shape:
        raise ValueError(
            f"prediction shape {pred.shape} != reference shape {ref.shape}; resize the prediction to the "
            "reference grid before scoring"
        )
    return pred, ref


def dice(pred: Any, ref: Any) -> float:
    """Dice coefficient 2|P∩R| / (|P| + |R|) of two masks of one shape.

    Returns:
        A float in [0, 1]; 1.0 when both masks are empty, 0.0 when exactly one is.

    Raises:
        ValueError: when the shapes differ.
    """
    pred, ref = _pair(pred, ref)
    total = int(pred.sum()) + int(ref.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(pred, ref).sum()) / total


def iou(pred: Any, ref: Any) -> float:
    """Intersection over union |P∩R| / |P∪R| of two masks of one shape, as D / (2 - D) of their :func:`dice` D.

    The identity holds for every pair of masks, so IoU follows Dice's empty-mask rule: 1.0 when both masks are
    empty, 0.0 when exactly one is. Raises ``ValueError`` when the shapes differ.
    """
    d = dice(pred, ref)
    return d / (2.0 - d)


def tight_box(mask: Any) -> Box | None:
    """Tight pixel box ``(y0, x0, y1, x1)`` around a 2-D mask [H, W] (y0/x0 inclusive, y1/x1 exclusive).

    Returns:
        The box as Python ints, or ``None`` for an empty mask.

    Raises:
        ValueError: when ``mask`` is not 2-D.
    """
    mask = np.asarray(mask) != 0
    if mask.ndim != 2:
        raise ValueError(f"a mask must be 2-D [H, W], got shape {mask.shape}")
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def grey_levels(image: Any) -> np.ndarray:
    """Grey levels of an image as float32 [H, W] in [0, 1], larger = brighter; the one rule for every reader.

    ``image`` is a PIL image of any mode (duck-typed: PIL is not imported) or an array [H, W] or [H, W, C] with
    C in (1, 3, 4). The rule:

    * colour (RGB, RGBA, palette, CMYK, ...): ITU-R BT.601 luma ``0.299 R + 0.587 G + 0.114 B`` (``LUMA_RGB``,
      PIL's ``convert("L")``); alpha is ignored;
    * 8-bit values: divided by 255; bool: 0 or 1;
    * float values already within [0, 1]: kept as they are;
    * anything else (16-bit, 32-bit integer, float outside [0, 1]): min-max scaled to [0, 1] (an image of one
      value gives zeros; NaN gives 0, infinity the end of the range, an image without a finite value zeros).

    Raises:
        ValueError: for arrays that are not [H, W] or [H, W, C] with C in (1, 3, 4).
    """
    array = _pixel_array(image)
    if array.ndim == 3 and array.shape[-1] in (1, 3, 4):
        array = array[..., 0] if array.shape[-1] == 1 else _luma(array)
    if array.ndim != 2:
        raise ValueError(f"expected a 2-D grey image or an RGB(A) image, got an array of shape {array.shape}")
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype == bool:
        return array.astype(np.float32)
    values = array.astype(np.float32)
    finite = values[np.isfinite(values)]
    if not finite.size:
        return np.zeros_like(values)  # no finite value: nothing to show (was inf -> 3.4e38, outside [0, 1])
    low, high = float(finite.min()), float(finite.max())
    if np.issubdtype(array.dtype, np.floating) and low >= 0.0 and high <= 1.0:
        return np.nan_to_num(values, nan=0.0, posinf=1.0, neginf=0.0)
    scaled = np.zeros_like(values) if high <= low else (values - low) / (high - low)
    return np.clip(np.nan_to_num(scaled, nan=0.0), 0.0, 1.0).astype(np.float32)


def as_grey(image: Any) -> np.ndarray:
    """:func:`grey_levels` as 8-bit: uint8 [H, W], 0..255 (rounded); an 8-bit grey input comes back unchanged."""
    return np.round(grey_levels(image) * 255.0).astype(np.uint8)


def _pixel_array(image: Any) -> np.ndarray:
    """The pixel array of an array, or of a PIL image (colour modes through PIL's own BT.601 ``convert("L")``)."""
    mode = getattr(image, "mode", None)
    if mode is not None and hasattr(image, "convert") and mode not in _GREY_MODES:
        image = image.convert("L")  # RGB(A), palette, LA, CMYK, ...: their arrays are not grey levels
    return np.asarray(image)


def _luma(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma of [H, W, 3|4] colour values, in the input's units (uint8 stays 8-bit after rounding)."""
    weights = np.asarray(LUMA_RGB, dtype=np.float32)
    luma = rgb[..., :3].astype(np.float32) @ weights
    return np.round(luma).astype(np.uint8) if rgb.dtype == np.uint8 else luma


__all__ = ["LUMA_RGB", "Box", "as_grey", "dice", "grey_levels", "iou", "tight_box"]
