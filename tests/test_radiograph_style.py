"""Radiograph-style processing (chexanatomy.radiograph) and the trainers' augmentation (train.augment)."""

import random

import numpy as np
import pytest
import torch

from chexanatomy.radiograph import (
    RadiographStyle,
    apply_style,
    burn_marker,
    collimate,
    random_style,
    sigmoid_lut,
    unsharp_mask,
)
from train.augment import RadiographAugmentation, augment_radiograph, check_deform, restyle, smooth_displacement, warp


def _ramp(n=64):
    return torch.linspace(0, 1, n)[None].repeat(n, 1)


def test_the_default_style_leaves_the_image_as_it_is():
    image = _ramp()
    torch.testing.assert_close(apply_style(image, RadiographStyle()), image, atol=1e-5, rtol=0)


def test_sigmoid_lut_keeps_black_and_white_and_steepens_the_middle():
    x = torch.tensor([0.0, 0.4, 0.5, 0.6, 1.0])
    y = sigmoid_lut(x, 0.5, 0.1)
    assert y[0] == pytest.approx(0.0, abs=1e-6) and y[-1] == pytest.approx(1.0, abs=1e-6)
    assert float(y[3] - y[1]) > 0.2 * 2  # slope in the middle above the identity's 1


def test_edge_enhancement_overshoots_at_an_edge_only():
    image = torch.zeros(32, 32)
    image[:, 16:] = 0.6
    sharp = unsharp_mask(image, 1.5, 1.0)
    assert float(sharp[:, 16].max()) > 0.6 and float(sharp[:, 15].min()) < 0.0
    assert torch.allclose(sharp[:, :8], image[:, :8]) and torch.allclose(sharp[:, -8:], image[:, -8:])


def test_collimation_and_marker_touch_only_their_regions():
    image = torch.full((100, 100), 0.3)
    shut = collimate(image, (0.1, 0.0, 0.05, 0.0), 1.0)
    assert torch.all(shut[:10] == 1.0) and torch.all(shut[:, :5] == 1.0)
    assert torch.all(shut[10:, 5:] == 0.3)
    marked = burn_marker(image, "R", "tr", 0.08, 1.0)
    changed = (marked != 0.3).nonzero()
    assert len(changed) > 10
    assert changed[:, 0].max() < 20 and changed[:, 1].min() > 70  # in the top-right corner


def test_random_styles_are_seeded_and_varied():
    a = random_style(np.random.default_rng(1))
    assert a == random_style(np.random.default_rng(1))
    draws = [random_style(np.random.default_rng(s)) for s in range(20)]
    assert len({d.lut_centre for d in draws}) == 20 and any(d.marker for d in draws)
    assert random_style(np.random.default_rng(1), strength=0.0).range_amount == 0.0


def test_warp_moves_masks_with_the_image_and_keeps_laterality():
    image = torch.zeros(1, 64, 64)
    image[0, 20:30, 40:50] = 1.0  # a bright square on the image right
    masks = (image > 0.5).float()
    moved_image, moved_masks = warp(image, masks, zoom=1.0, angle_deg=0.0, shift=(0.125, 0.0))
    assert torch.equal(moved_masks[0].nonzero()[:, 1].unique(), torch.arange(48, 58))
    assert torch.equal(moved_masks[0] > 0.5, moved_image[0] > 0.5)
    _, rotated = warp(image, masks, zoom=1.0, angle_deg=10.0, shift=(0.0, 0.0))
    assert rotated[0].nonzero()[:, 1].float().mean() > 32  # still on the image right
    shrunk, _ = warp(image + 0.5, masks, zoom=0.7, angle_deg=0.0, shift=(0.0, 0.0))
    assert float(shrunk[0, 0].max()) == 0.0 and float(shrunk[0, 32, 32]) > 0.4  # black canvas around it


def test_augmentation_is_seeded_and_restyling_never_moves_masks():
    image = torch.rand(1, 48, 48)
    masks = (torch.rand(3, 48, 48) > 0.7).float()
    a = augment_radiograph(image, masks, random.Random(5))
    b = augment_radiograph(image, masks, random.Random(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    only_style = RadiographAugmentation(geometry_p=0.0, style_p=1.0)
    styled, same = augment_radiograph(image, masks, random.Random(5), only_style)
    assert torch.equal(same, masks) and not torch.equal(styled, image)
    assert float(restyle(image, random.Random(0), only_style).min()) >= 0.0


def test_aspect_stretches_vertically_about_the_centre_and_keeps_the_width():
    image = torch.zeros(1, 64, 64)
    image[0, 24:40, 36:52] = 1.0  # 16 x 16 on the image right, vertically centred
    masks = (image > 0.5).float()
    _, tall = warp(image, masks, zoom=1.0, angle_deg=0.0, shift=(0.0, 0.0), aspect=1.5)
    rows, cols = tall[0].nonzero().T
    assert (int(rows.min()), int(rows.max())) == (20, 43)  # 24 rows, same centre
    assert (int(cols.min()), int(cols.max())) == (36, 51)  # width and side unchanged
    _, short = warp(image, masks, zoom=1.0, angle_deg=0.0, shift=(0.0, 0.0), aspect=0.5)
    assert short[0].sum() == 8 * 16


def test_aspect_is_drawn_only_when_asked_for():
    image = torch.rand(1, 48, 48)
    masks = (torch.rand(2, 48, 48) > 0.7).float()
    geometry_only = RadiographAugmentation(geometry_p=1.0, style_p=0.0)
    stretching = RadiographAugmentation(geometry_p=1.0, style_p=0.0, aspect=(0.5, 0.5))
    plain = augment_radiograph(image, masks, random.Random(3), geometry_only)
    stretched = augment_radiograph(image, masks, random.Random(3), stretching)
    assert 0.4 < float(stretched[1].sum() / plain[1].sum()) < 0.6  # same zoom/rotation/shift, half the height


def _lung_pair(n=64):
    """Two lung-like ovals: label 0 on the image left (the patient's right), label 1 on the image right."""
    yy, xx = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    right = (((xx - 0.3 * n) / (0.12 * n)) ** 2 + ((yy - 0.5 * n) / (0.3 * n)) ** 2 <= 1).float()
    left = (((xx - 0.7 * n) / (0.12 * n)) ** 2 + ((yy - 0.5 * n) / (0.3 * n)) ** 2 <= 1).float()
    masks = torch.stack([right, left])
    return masks.amax(0, keepdim=True), masks


def test_the_deformation_bends_outlines_but_keeps_each_lung_in_its_place_and_side():
    image, masks = _lung_pair()
    no_move = smooth_displacement(64, 0.0, 5, random.Random(0))
    assert no_move.shape == (64, 64, 2) and float(no_move.abs().max()) == 0.0
    torch.testing.assert_close(warp(image, masks, 1.0, 0.0, (0.0, 0.0), displacement=no_move)[1], masks)
    field = smooth_displacement(64, 0.05, 5, random.Random(1))
    assert 0.0 < float(field.abs().max()) <= 2 * 0.05 * 1.25  # bicubic overshoot stays near the control points'
    _, bent = warp(image, masks, 1.0, 0.0, (0.0, 0.0), displacement=field)
    overlap = (bent * masks).sum((1, 2)) * 2 / (bent.sum((1, 2)) + masks.sum((1, 2)))
    assert bool((overlap < 0.99).all()) and bool((overlap > 0.7).all())  # another outline, the same organ
    columns = [float(m.nonzero()[:, 1].float().mean()) for m in bent]
    assert columns[0] < 32 < columns[1]  # the patient's right lung stays on the image left


def test_the_deformation_keeps_the_frame_straight():
    """A real radiograph's edges and collimation border are straight lines: the field bends only what is inside."""
    frame = torch.ones(1, 64, 64)  # a shrunk frame on a black canvas: its edges are the collimation border
    no_masks = torch.zeros(0, 64, 64)
    field = smooth_displacement(64, 0.1, 5, random.Random(2))
    assert float(field[0].abs().max()) == float(field[-1].abs().max()) == float(field[:, 0].abs().max()) == 0.0
    for zoom, angle in ((0.75, 0.0), (0.8, 7.0)):
        straight, _ = warp(frame, no_masks, zoom, angle, (0.05, -0.03))
        bent, _ = warp(frame, no_masks, zoom, angle, (0.05, -0.03), displacement=field)
        assert float((bent - straight).abs().max()) < 0.05  # the same frame, edge for edge
    image, masks = _lung_pair()
    _, moved = warp(image, masks, 0.75, 0.0, (0.0, 0.0), displacement=field)
    _, still = warp(image, masks, 0.75, 0.0, (0.0, 0.0))
    assert not torch.equal(moved, still)  # while the lungs inside it bend
    with pytest.raises(ValueError, match="at least 3"):
        smooth_displacement(64, 0.05, 2, random.Random(0))  # a grid that is all border cannot move anything


def test_the_deformation_is_off_by_default_and_seeded_when_on():
    image, masks = _lung_pair(48)
    geometry_only = RadiographAugmentation(geometry_p=1.0, style_p=0.0)
    deforming = RadiographAugmentation(geometry_p=1.0, style_p=0.0, deform=0.04)
    assert RadiographAugmentation().deform == 0.0
    plain = augment_radiograph(image, masks, random.Random(3), geometry_only)
    bent = augment_radiograph(image, masks, random.Random(3), deforming)
    again = augment_radiograph(image, masks, random.Random(3), deforming)
    assert torch.equal(bent[1], again[1]) and not torch.equal(bent[1], plain[1])
    check_deform(0.0)
    with pytest.raises(ValueError, match="--augment_deform"):
        check_deform(0.5)
