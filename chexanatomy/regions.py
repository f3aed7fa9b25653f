"""Regions of a binary mask: the largest 8-connected one (``scipy.ndimage``), a mask without specks, a lung field's end.

One rule for every part that asks how many pieces a mask is in: the corpus builder cleans its lung-field targets
with :func:`without_specks`, the evaluation keeps a prediction's :func:`largest_component` and the plausibility
checks measure a lung's main region with it. The corpus builder ends each lung field at its costophrenic angle
with :func:`above_costophrenic_angle`. Needs scipy (the ``build`` and ``eval`` extras); the core API does not
import this module.

A mask is a bool (or any-dtype, read as ``!= 0``) array [H, W] indexed ``(y, x)``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

EIGHT_CONNECTED = np.ones((3, 3), bool)


def _regions(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(labels [H, W], pixel count of each label; label 0, the background, counted as 0)."""
    labels, _ = ndimage.label(np.asarray(mask) != 0, structure=EIGHT_CONNECTED)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels, sizes


def largest_component(mask: np.ndarray) -> np.ndarray:
    """Bool [H, W]: the largest 8-connected component of ``mask`` (empty stays empty)."""
    labels, sizes = _regions(mask)
    if len(sizes) <= 2:
        return np.asarray(mask) != 0
    return labels == sizes.argmax()


def without_specks(mask: np.ndarray, min_pixels: int) -> np.ndarray:
    """Bool [H, W]: the 8-connected components of ``mask`` with at least ``min_pixels`` pixels.

    A component's size does not depend on what else is in the mask, so a two-lung mask cleaned at once equals the
    union of its two lungs cleaned apart (as long as they do not touch).
    """
    if min_pixels < 1:
        raise ValueError(f"min_pixels must be at least 1, got {min_pixels}")
    labels, sizes = _regions(mask)
    keep = sizes >= min_pixels
    keep[0] = False
    return keep[labels]


def above_costophrenic_angle(field: np.ndarray, min_width_fraction: float) -> np.ndarray:
    """Bool [H, W]: one side's lung field ``field`` ended at its costophrenic angle (rows are the image's y, down).

    Below its widest row (the most pixels), the field ends at the first row holding fewer than
    ``min_width_fraction`` of the widest row's pixels; that row and every row below it are removed. Rows above the
    widest row are kept as they are (the apex narrows to nothing by nature). An empty field stays empty.
    """
    if not 0.0 <= min_width_fraction < 1.0:
        raise ValueError(f"min_width_fraction must be in [0, 1), got {min_width_fraction}")
    field = np.asarray(field) != 0
    widths = field.sum(1)
    if not widths.any():
        return field
    widest = int(widths.argmax())
    narrow = np.flatnonzero(widths[widest:] < min_width_fraction * widths[widest])
    if narrow.size == 0:
        return field
    ended = field.copy()
    ended[widest + int(narrow[0]) :] = False
    return ended
