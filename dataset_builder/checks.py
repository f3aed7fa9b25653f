"""Checks of every rendered view before it is written: bad input must never become training data.

A CT that slipped through the input checks (non-finite values introduced later, a grid that projects to nothing,
labels that do not match the anatomy) shows in its views: a constant image, or lungs of an implausible size. Such a
subject fails with the reason instead of writing rows with full masks over an empty image.
"""

from __future__ import annotations

import numpy as np

from .ct import CTInputError
from .render import RenderedView

PLAUSIBLE_LUNG_FRACTION = (0.05, 0.80)  # lungs / image area; real corpora: 0.29 (lateral) to 0.55 (PA)
MIN_LUNG_STD = 1.0  # grey levels; a rendered lung has tens of grey levels of texture and noise


def lungs_of(view: RenderedView) -> np.ndarray | None:
    """The view's mask of both lungs (``lungs``, else ``lung_left | lung_right``), None when it has none."""
    if "lungs" in view.masks:
        return view.masks["lungs"]
    sides = [view.masks[n] for n in ("lung_left", "lung_right") if n in view.masks]
    return np.logical_or.reduce(sides) if sides else None


def view_problem(view: RenderedView) -> str | None:
    """Why ``view`` must not become a row (a constant image, no lungs, lungs of implausible area), or None."""
    image = view.image
    if image.min() == image.max():
        return f"the image is constant (every pixel {image.min()})"
    lungs = lungs_of(view)
    if lungs is None or not lungs.any():
        return "no lungs in the view"
    fraction = float(lungs.mean())
    low, high = PLAUSIBLE_LUNG_FRACTION
    if not low <= fraction <= high:
        return f"the lungs cover {fraction:.0%} of the image (plausible: {low:.0%} to {high:.0%})"
    if float(image[lungs].std()) < MIN_LUNG_STD:
        return f"the image is constant inside the lungs (grey level {int(np.median(image[lungs]))})"
    return None


def check_views(views: list[RenderedView]) -> None:
    """Raise ``CTInputError`` naming the first unusable view (view, pose and why); return when all are usable."""
    for view in views:
        if problem := view_problem(view):
            raise CTInputError(f"rendered {view.geometry.view} pose {view.pose_index}: {problem}")
