"""Radiological convention: frontal views show the patient's right on the image left, head up."""

import numpy as np
import pytest

from tests.conftest import centroid_yx


@pytest.mark.parametrize("view", ["PA", "AP"])
def test_left_lung_is_on_the_image_right_in_frontal_views(phantom_views, view):
    v = phantom_views[view]
    width = v.image.shape[1]
    assert centroid_yx(v.masks["lung_left"])[1] > width / 2 + 5
    assert centroid_yx(v.masks["lung_right"])[1] < width / 2 - 5


@pytest.mark.parametrize("view", ["PA", "AP"])
def test_heart_lies_mostly_on_the_image_right(phantom_views, view):
    heart = phantom_views[view].masks["heart"]
    cols = np.argwhere(heart)[:, 1]
    assert (cols >= heart.shape[1] / 2).mean() > 0.6


@pytest.mark.parametrize("view", ["PA", "AP", "LAT"])
def test_head_is_up(phantom_views, view):
    m = phantom_views[view].masks
    assert centroid_yx(m["clavicle_left"])[0] < centroid_yx(m["heart"])[0]
    assert centroid_yx(m["trachea"])[0] < centroid_yx(m["lungs"])[0]


def test_lateral_shows_anterior_on_the_image_left(phantom_views):
    m = phantom_views["LAT"].masks
    assert centroid_yx(m["sternum"])[1] < centroid_yx(m["thoracic_spine"])[1] - 10


def test_ap_is_the_mirror_of_pa_only_in_depth_not_in_side(phantom_views):
    """AP and PA agree on sides; the AP heart is magnified more (it is farther from the detector)."""
    pa, ap = phantom_views["PA"].masks, phantom_views["AP"].masks
    assert abs(centroid_yx(pa["lung_left"])[1] - centroid_yx(ap["lung_left"])[1]) < 6
    assert ap["heart"].sum() > pa["heart"].sum()
