"""Radiograph-like rendering of the embedded CT: no CT box, no contrast, exact masks, seeded, lung fields."""

from dataclasses import replace

import numpy as np
import pytest
from scipy import ndimage

from chexanatomy.anatomy import COSTOPHRENIC_MIN_WIDTH
from dataset_builder.appearance import MU_WATER_PER_MM, attenuation_channels
from dataset_builder.build import BuildConfig, build
from dataset_builder.ct import load_embedded
from dataset_builder.geometry import rays, view_geometry
from dataset_builder.projector import SlabProjector
from dataset_builder.realism import BLOOD_HU, extend_body, virtual_non_contrast
from dataset_builder.render import RenderSettings, isocenter_of, render_subject
from tests.conftest import centroid_yx

REALISTIC = RenderSettings(size_px=128, views=("PA",), poses_per_view=2, seed=3)
# Same geometry (framing and poses are drawn before the appearance), nothing of the radiograph-like chain.
PLAIN_SAME_GEOMETRY = replace(REALISTIC, virtual_non_contrast=False, extend_body=False, physics=False, processing=0.0)
# The renderer of releases before corpus 2.0: the CT's box in a fixed 430 mm field.
OLD = replace(PLAIN_SAME_GEOMETRY, framing="fixed", randomize=False, poses_per_view=1)


@pytest.fixture(scope="module")
def embedded():
    return load_embedded()


@pytest.fixture(scope="module")
def realistic(embedded):
    return render_subject(embedded, REALISTIC)


def longest_straight_edge(image: np.ndarray, axis: int, step: float = 0.15, margin: float = 0.06) -> float:
    """Longest run, as a fraction of the side, of one image row (axis 0) or column (axis 1) along which the grey
    level jumps by more than ``step`` (same sign) across two pixels; the outer ``margin`` (collimation) is ignored."""
    x = ndimage.gaussian_filter(image.astype(np.float32) / 255.0, 1.0)
    x = x if axis == 0 else x.T
    jumps = x[2:] - x[:-2]
    n = x.shape[0]
    lo, hi = int(margin * n), n - int(margin * n)
    best = 0
    for sign in (1, -1):
        for line in (sign * jumps[lo : hi - 2, lo:hi]) > step:
            edges = np.diff(np.r_[0, line.astype(np.int8), 0])
            if line.any():
                best = max(best, int((np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)).max()))
    return best / n


def test_no_ct_box_edge_crosses_the_body(embedded, realistic):
    old = render_subject(embedded, OLD)[0].image
    assert longest_straight_edge(old, 0) > 0.5  # the detector sees the old renderer's box (the CT's first slice)
    for view in realistic:
        assert longest_straight_edge(view.image, 0) < 0.25
        assert longest_straight_edge(view.image, 1) < 0.45  # the spine's borders are the longest vertical lines


def test_masks_are_exact_under_every_randomisation(embedded, realistic):
    plain = render_subject(embedded, PLAIN_SAME_GEOMETRY)
    for a, b in zip(realistic, plain, strict=True):
        assert a.geometry == b.geometry and a.pose == b.pose
        assert a.masks.keys() == b.masks.keys()
        assert all(np.array_equal(a.masks[n], b.masks[n]) for n in a.masks)
        assert not np.array_equal(a.image, b.image)


def test_same_seed_same_images_other_seed_other_images(embedded, realistic):
    again = render_subject(embedded, REALISTIC)
    assert all(np.array_equal(a.image, b.image) for a, b in zip(realistic, again, strict=True))
    assert [a.appearance for a in realistic] == [b.appearance for b in again]
    other = render_subject(embedded, replace(REALISTIC, seed=4, poses_per_view=1))
    assert not np.array_equal(other[0].image, realistic[0].image)


def test_lung_fields_are_the_lungs_minus_heart_mediastinum_and_abdomen(realistic):
    for view in realistic:
        m = view.masks
        for side in ("left", "right"):
            field, lung = m[f"lung_field_{side}"], m[f"lung_{side}"]
            assert field.any() and not (field & ~lung).any()
            for occluder in ("heart", "aorta", "liver", "trachea"):
                if occluder in m:
                    assert not (field & m[occluder]).any()
            assert field.sum() < 0.9 * lung.sum()  # the recesses behind the domes and the heart are gone
        width = m["lungs"].shape[1]
        assert centroid_yx(m["lung_field_left"])[1] > width / 2 > centroid_yx(m["lung_field_right"])[1]
        assert np.array_equal(m["lung_fields"], m["lung_field_left"] | m["lung_field_right"])
        for side in ("left", "right"):  # one region each, as SCR draws it: no specks between thin occluders
            assert ndimage.label(m[f"lung_field_{side}"], structure=np.ones((3, 3)))[1] == 1
        for side in ("left", "right"):  # ended at the costophrenic angle: no row below the widest is a thin recess
            widths = m[f"lung_field_{side}"].sum(1)
            below = widths[int(widths.argmax()) :]
            below = below[below > 0]
            assert below.min() >= COSTOPHRENIC_MIN_WIDTH * widths.max()


def test_a_lateral_view_has_lungs_but_no_lung_fields(embedded):
    """SCR's lung field is a frontal definition: a lateral view's overlapping lungs would leave slivers of it."""
    (lateral,) = render_subject(embedded, replace(REALISTIC, views=("LAT",), poses_per_view=1))
    assert {"lung_left", "lung_right", "lungs", "heart"} <= lateral.masks.keys()
    assert not {"lung_field_left", "lung_field_right", "lung_fields"} & lateral.masks.keys()


def _lung_width_and_apex(view) -> tuple[float, float]:
    """(width of both lungs, row of the apices), as fractions of the image side."""
    cols = np.flatnonzero(view.masks["lungs"].any(0))
    rows = np.flatnonzero(view.masks["lungs"].any(1))
    side = view.masks["lungs"].shape[0]
    return (cols[-1] - cols[0]) / side, rows[0] / side


def test_radiograph_framing_fills_the_image_with_the_lungs(embedded, realistic):
    old_width, old_apex = _lung_width_and_apex(render_subject(embedded, OLD)[0])  # the fixed 430 mm field
    for view in realistic:
        width, apex = _lung_width_and_apex(view)
        assert 0.65 < width < 0.95 and width > old_width  # fill 0.70-0.90 of the field (old: 0.64)
        assert apex < 0.2 and apex < old_apex  # apices near the top, as a radiographer frames a chest


def test_virtual_non_contrast_makes_the_projected_heart_soft_tissue(embedded):
    """Along every ray through the heart, its mean attenuation is at most that of soft tissue (60 HU)."""
    ids = embedded.structure_labels
    heart = [i for i, n in ids.items() if n == "heart"]
    geometry = view_geometry("PA", 64, isocenter_of(embedded))
    soft_tissue = MU_WATER_PER_MM * 1.06

    def mean_heart_attenuation(hu):
        inside = np.isin(embedded.labels, heart)
        mu = np.where(inside, attenuation_channels(hu)[0], 0.0).astype(np.float32)
        proj = SlabProjector(mu, embedded.labels, embedded.affine, heart).project(*rays(geometry))
        path = proj.path_mm[0, 0]
        through = path > 20.0
        return (proj.line_integral[0, 0][through] / path[through]).median().item()

    vnc, enhanced = virtual_non_contrast(embedded.hu, embedded.labels, ids)
    assert enhanced  # the embedded CT's aorta is ~400 HU
    assert mean_heart_attenuation(embedded.hu) > 1.15 * soft_tissue  # contrast: the heart glows
    assert mean_heart_attenuation(vnc) <= soft_tissue
    assert float(vnc[np.isin(embedded.labels, heart)].max()) <= BLOOD_HU
    same, enhanced_again = virtual_non_contrast(vnc, embedded.labels, ids)
    assert not enhanced_again and same is vnc  # an unenhanced CT is left alone


def test_extended_body_keeps_world_positions_and_labels(embedded):
    hu, labels, affine = extend_body(embedded.hu, embedded.labels, embedded.affine, embedded.structure_labels)
    assert hu.shape[2] > embedded.hu.shape[2] and labels.shape == hu.shape
    before, after = np.bincount(embedded.labels.ravel()), np.bincount(labels.ravel())
    assert np.array_equal(before[1:], after[1:])  # every label voxel kept; the new voxels are background
    # a voxel of the original keeps its world position: find the original's corner voxel in the padded grid
    corner = np.linalg.solve(affine, embedded.affine @ np.array([0, 0, 0, 1.0]))[:3]
    i, j, k = (int(round(v)) for v in corner)
    assert np.allclose(corner, (i, j, k))
    assert labels[i, j, k] == embedded.labels[0, 0, 0]
    assert np.array_equal(labels[i : i + 512, j : j + 512, k : k + 133], embedded.labels)


def test_every_realism_option_goes_through_the_cli_into_build_config(tmp_path):
    import json

    from chexanatomy.cli import parse_config

    argv = ["--source", "phantom", "--output_dir", str(tmp_path / "c"), "--num_subjects", "1", "--size_px", "48",
            "--poses_per_view", "1", "--views", "PA", "--codec", "none", "--virtual_non_contrast", "false",
            "--extend_body", "false", "--framing", "fixed", "--physics", "false", "--processing", "0.25"]  # fmt: skip
    config = parse_config(BuildConfig, argv)
    build(config)
    saved = json.loads((tmp_path / "c" / "build_config.json").read_text())
    assert {k: saved[k] for k in ("virtual_non_contrast", "extend_body", "framing", "physics", "processing")} == {
        "virtual_non_contrast": False, "extend_body": False, "framing": "fixed", "physics": False, "processing": 0.25,
    }  # fmt: skip
    with pytest.raises(ValueError, match="framing"):
        BuildConfig(source="phantom", framing="zoomed")
