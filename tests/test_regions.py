"""chexanatomy.regions: one rule for a mask's pieces (the builder's speck removal, the evaluation's keep-largest)."""

import numpy as np
import pytest

from chexanatomy.regions import largest_component, without_specks


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
