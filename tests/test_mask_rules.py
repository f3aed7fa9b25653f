"""chexanatomy.masks: one Dice/IoU empty-mask rule, one tight box and one grey rule for every part."""

import ast
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import chexanatomy.masks
from chexanatomy.inference import grey_image
from chexanatomy.masks import LUMA_RGB, as_grey, dice, grey_levels, iou, tight_box
from train.codec import mean_dice


def test_masks_module_imports_numpy_only():
    """Self-contained artifacts ship a copy of the file: it must not need torch, PIL or the rest of the package."""
    tree = ast.parse(Path(chexanatomy.masks.__file__).read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0}
    relative = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level > 0]
    assert imported <= {"__future__", "typing", "numpy"} and not relative


def test_empty_masks_score_one_everywhere_dice_is_computed():
    """Both empty = 1.0, one empty = 0.0: the rule eval and the Space used, now also the codec trainer's."""
    empty, full = np.zeros((5, 5), bool), np.ones((5, 5), bool)
    assert dice(empty, empty) == 1.0 and iou(empty, empty) == 1.0
    assert dice(full, empty) == 0.0 and iou(empty, full) == 0.0
    assert mean_dice(torch.full((2, 8, 8), -1.0), torch.zeros(2, 8, 8)) == 1.0  # was 0.0 in train/codec.py
    half = torch.zeros(2, 8, 8)
    half[:, :4] = 1
    assert mean_dice(half * 2 - 1, half) == 1.0 and mean_dice(-(half * 2 - 1), half) == 0.0


def test_dice_iou_count_nonzero_and_refuse_shape_mismatch():
    a = np.zeros((4, 6), np.uint8)
    a[1:3, 1:5] = 7  # 8 pixels
    b = np.zeros((4, 6), bool)
    b[1:3, 3:6] = True  # 6 pixels, 4 shared
    assert dice(a, b) == pytest.approx(2 * 4 / 14) and iou(a, b) == pytest.approx(4 / 10)
    with pytest.raises(ValueError, match="shape"):
        dice(a, b[:, :5])


def test_tight_box_is_inclusive_exclusive_and_none_when_empty():
    mask = np.zeros((6, 8), bool)
    mask[2, 3] = mask[4, 6] = True
    assert tight_box(mask) == (2, 3, 5, 7)
    assert all(type(v) is int for v in tight_box(mask))
    assert tight_box(np.zeros((3, 3))) is None
    with pytest.raises(ValueError, match="2-D"):
        tight_box(np.ones((2, 3, 3)))


def test_grey_rule_for_each_kind_of_input():
    ramp8 = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert np.array_equal(as_grey(ramp8), ramp8) and np.array_equal(as_grey(Image.fromarray(ramp8)), ramp8)
    assert grey_levels(ramp8)[0, 1] == pytest.approx(1 / 255)
    twelve_bit = np.linspace(100, 4095, 64).reshape(8, 8).astype(np.uint16)
    levels = grey_levels(Image.fromarray(twelve_bit))
    assert levels.min() == 0 and levels.max() == 1  # min-max scaled, not clipped to white
    unit = np.linspace(0.2, 0.6, 16, dtype=np.float32).reshape(4, 4)
    assert np.array_equal(grey_levels(unit), unit)  # float already in [0, 1]: kept
    assert grey_levels(unit * 1000).max() == pytest.approx(1.0)  # float outside [0, 1]: min-max
    assert not grey_levels(np.full((4, 4), 9, np.int32)).any()  # one value: zeros
    nan = np.array([[0.0, np.nan], [0.5, 1.0]], np.float32)
    assert grey_levels(nan)[0, 1] == 0.0


def test_colour_is_bt601_luma_for_pil_images_and_arrays_alike():
    rgb = np.random.default_rng(0).integers(0, 256, (12, 12, 3), dtype=np.uint8)
    from_pil = as_grey(Image.fromarray(rgb))
    from_array = as_grey(rgb)
    assert np.abs(from_pil.astype(int) - from_array.astype(int)).max() <= 1
    assert from_array[0, 0] == round(float(rgb[0, 0].astype(float) @ np.asarray(LUMA_RGB)))
    rgba = np.dstack([rgb, np.zeros((12, 12), np.uint8)])
    assert np.array_equal(as_grey(rgba), from_array)  # alpha ignored
    palette = Image.fromarray(rgb).convert("P")
    assert np.array_equal(as_grey(palette), np.asarray(palette.convert("L")))  # colours, not palette indices


def test_grey_image_is_the_pil_face_of_the_same_rule():
    rgb = np.random.default_rng(1).integers(0, 256, (9, 7, 3), dtype=np.uint8)
    assert np.array_equal(np.asarray(grey_image(rgb)), as_grey(rgb))
    with pytest.raises(ValueError, match="2-D grey image or an RGB"):
        grey_image(np.zeros((4, 4, 2)))
