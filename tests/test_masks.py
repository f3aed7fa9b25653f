"""Masks are solid, aligned with the image and consistent with their members."""

import numpy as np
import pytest
from scipy import ndimage


@pytest.mark.parametrize("name", ["lung_left", "lung_right", "trachea", "lung_upper_lobe_right"])
@pytest.mark.parametrize("view", ["PA", "LAT"])
def test_air_filled_structures_are_solid(phantom_views, view, name):
    mask = phantom_views[view].masks[name]
    holes = ndimage.binary_fill_holes(mask) & ~mask
    assert holes.sum() == 0, f"{name} has {holes.sum()} interior hole pixels in {view}"


@pytest.mark.parametrize("name", ["thoracic_spine", "clavicle_left", "sternum"])
def test_bone_masks_cover_bright_pixels(phantom_views, name):
    v = phantom_views["PA"]
    mask = v.masks[name]
    ring = ndimage.binary_dilation(mask, iterations=3) & ~ndimage.binary_dilation(mask, iterations=1)
    assert v.image[mask].mean() > v.image[ring].mean() + 5


def test_derived_lung_is_the_union_of_its_lobes(phantom_views):
    m = phantom_views["PA"].masks
    union = m["lung_upper_lobe_left"] | m["lung_lower_lobe_left"]
    assert (m["lung_left"] >= union).all()  # union in 3-D: at least the 2-D union
    assert (m["lung_left"] & ~union).sum() < 0.02 * union.sum()


def test_lungs_are_dark_and_heart_is_bright(phantom_views):
    v = phantom_views["PA"]
    lung_only = v.masks["lungs"] & ~v.masks["heart"] & ~v.masks["ribs_left"] & ~v.masks["ribs_right"]
    assert v.image[lung_only].mean() < v.image[v.masks["heart"]].mean()


def test_images_are_8bit_and_masks_match_their_size(phantom_views):
    for v in phantom_views.values():
        assert v.image.dtype == np.uint8 and v.image.shape == (96, 96)
        assert v.image.max() > 200 and v.image.min() < 30
        for mask in v.masks.values():
            assert mask.shape == v.image.shape and mask.dtype == bool and mask.sum() >= 8
