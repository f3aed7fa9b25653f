"""Box statistics of a VLM's answers: how often the second `<loc>` repeats the first (x0 == y0), beside the references.

    from eval.box_statistics import box_statistics
    box_statistics([p.answer for p in predictions.values()], [truth[n] for n in predictions])

A model that has not learnt to read coordinates from the image copies the previous token: its x0 comes out equal to
its y0 far more often than in the reference boxes (issue 21: 6 of 24 answers on the DRR test split, 0 of the
references). The rate is only meaningful next to the same rate of the reference boxes, so both are computed here,
from the same tokens the model is trained on: an answer's `<loc>` values as written (``mask_tokens.answer_locs``),
a reference mask's tight box as the training targets encode it (``mask_tokens.box_to_loc_values``).

This sits beside ``eval.scores`` rather than in it: ``scores.py`` is copied into the ``evaluate`` metric and may
import nothing of the core but ``chexanatomy.masks``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from chexanatomy.mask_tokens import answer_locs, box_to_loc_values
from chexanatomy.masks import tight_box


def x0_equals_y0_rate(locs: Iterable[Sequence[int]]) -> tuple[float | None, int]:
    """Share of boxes whose second `<loc>` value equals the first, over the boxes with at least two values.

    Args:
        locs: `<loc>` values per box, order (y0, x0, y1, x1); shorter sequences (no box) are not counted.

    Returns:
        ``(rate in [0, 1] or None when no box counts, number of boxes counted)``.
    """
    counted = [v for v in locs if len(v) >= 2]
    return (sum(int(v[0]) == int(v[1]) for v in counted) / len(counted) if counted else None), len(counted)


def reference_locs(mask: np.ndarray) -> list[int]:
    """The `<loc>` values (y0, x0, y1, x1) of a reference mask's tight box, as a training target writes them.

    Args:
        mask: bool [H, W] reference mask; an empty mask has no box (``[]``).
    """
    box = tight_box(mask)
    return [] if box is None else [int(v) for v in box_to_loc_values(box, np.shape(mask))]


def box_statistics(answers: Iterable[str], references: Iterable[np.ndarray]) -> dict[str, float | int | None]:
    """The x0 == y0 rate of a set of VLM answers and of the reference boxes they are compared with.

    Args:
        answers: the model's raw answers (``chexanatomy.inference.Prediction.answer``), one per structure asked;
            a U-Net's empty answers have no box and are not counted.
        references: the reference masks (bool [H, W]) scored in the same evaluation.

    Returns:
        ``{"x0_eq_y0_rate", "x0_eq_y0_answers" (answers with a box), "reference_x0_eq_y0_rate",
        "reference_boxes"}``; a rate is None when nothing was counted.
    """
    rate, counted = x0_equals_y0_rate(answer_locs(a) for a in answers)
    reference_rate, boxes = x0_equals_y0_rate(reference_locs(m) for m in references)
    return {
        "x0_eq_y0_rate": rate,
        "x0_eq_y0_answers": counted,
        "reference_x0_eq_y0_rate": reference_rate,
        "reference_boxes": boxes,
    }


__all__ = ["box_statistics", "reference_locs", "x0_equals_y0_rate"]
