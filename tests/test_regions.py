"""chexanatomy.regions: one rule for a mask's pieces (the builder's speck removal, the evaluation's keep-largest) and
where a lung field ends below (its costophrenic angle)."""

import numpy as np
import pytest

from chexanatomy.regions import above_costophrenic_angle, largest_component, without_specks


def two_lungs_and_specks() -> np.ndarray:
    mask = np.zeros((40, 40), bool)
    mask[5:35, 3:15] = True  # the image-left lung: 360 px
    mask[5:30, 25:37] = True  # the image-right lung: 300 px
    mask[37, 20] = mask[2, 20] = True  # two one-pixel specks
    mask[20:22, 18:20] = True  # a 4-pixel speck
    return mask


def test_specks_go_and_both_lungs_stay():
    mask = two_lungs_and_specks()
    clean = without_specks(mask, 5)
    assert clean.sum() == 660 and clean[5:35, 3:15].all() and clean[5:30, 25:37].all()
    assert np.array_equal(without_specks(mask, 1), mask)
    # a component's size does not depend on the rest: cleaning the union equals the union of the cleaned sides
    left, right = mask.copy(), mask.copy()
    left[:, 20:] = right[:, :20] = False
    assert np.array_equal(without_specks(mask, 5), without_specks(left, 5) | without_specks(right, 5))
    with pytest.raises(ValueError, match="at least 1"):
        without_specks(mask, 0)


def test_the_largest_component_is_the_larger_lung_and_diagonal_pixels_connect():
    mask = two_lungs_and_specks()
    assert largest_component(mask).sum() == 360
    diagonal = np.eye(6, dtype=bool)
    assert np.array_equal(largest_component(diagonal), diagonal)  # 8-connected: one piece
    assert not largest_component(np.zeros((4, 4), bool)).any()


def lung_field_with_a_recess_tail() -> np.ndarray:
    """A 60 x 40 right lung field (image left): apex narrowing from row 5, widest 20 px at rows 25-34, then a
    3-pixel-wide costophrenic recess running down the lateral wall to row 54, as TotalSegmentator's labels project."""
    field = np.zeros((60, 40), bool)
    for row in range(5, 25):
        field[row, 5 : 5 + (row - 4)] = True  # the apex: 1 .. 20 px
    field[25:35, 5:25] = True  # the widest rows: 20 px
    field[35:40, 5:15] = True  # the dome's lateral slope: 10 px (half the widest)
    field[40:55, 5:8] = True  # the recess seen edge-on: 3 px (under a tenth of the widest would be 2 px)
    return field


def test_a_lung_field_ends_where_it_narrows_below_its_widest_row():
    field = lung_field_with_a_recess_tail()
    ended = above_costophrenic_angle(field, 0.2)  # 4 px: the 3-pixel recess goes, the 10-pixel slope stays
    assert np.array_equal(ended[:40], field[:40]) and not ended[40:].any()
    assert np.array_equal(above_costophrenic_angle(field, 0.1), field)  # 2 px: nothing is narrower, all stays
    assert np.array_equal(above_costophrenic_angle(field, 0.0), field)
    # the apex narrows to one pixel above the widest row and is never cut
    assert above_costophrenic_angle(field, 0.9)[5:35].sum() == field[5:35].sum()
    assert not above_costophrenic_angle(np.zeros((8, 8), bool), 0.1).any()
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        above_costophrenic_angle(field, 1.0)
