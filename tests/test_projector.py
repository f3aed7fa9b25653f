"""The slab projector against diffdrr's Siddon renderer and against geometry we can work out by hand."""

import numpy as np
import pytest
import torch

from dataset_builder.geometry import Pose, rays, view_geometry
from dataset_builder.projector import SlabProjector
from dataset_builder.reference import siddon_path_lengths


def dice(a, b):
    return 2 * (a & b).sum() / max(a.sum() + b.sum(), 1)


@pytest.mark.parametrize(
    "view,pose", [("PA", Pose()), ("LAT", Pose()), ("AP", Pose((3.0, -2.0, 4.0), (10.0, -5.0, 8.0)))]
)
def test_label_masks_match_diffdrr_siddon(phantom, view, pose):
    ids = sorted(i for i in np.unique(phantom.labels) if i)
    geometry = view_geometry(view, 64)
    projector = SlabProjector(np.zeros_like(phantom.hu), phantom.labels, phantom.affine, ids)
    ours = projector.project(*rays(geometry, pose)).path_mm[0]
    ref = siddon_path_lengths(phantom, geometry, pose)
    for row, label_id in enumerate(ids):
        a, b = ours[row].numpy() > 1.5, ref[label_id].numpy() > 1.5
        if b.sum() >= 40:
            assert dice(a, b) > 0.9, f"label {label_id} ({phantom.label_names[label_id]}) in {view}"
    big = [r for r, i in enumerate(ids) if (ref[i] > 1.5).sum() > 300]
    corr = np.corrcoef(ours[big].numpy().ravel(), ref[[ids[r] for r in big]].numpy().ravel())[0, 1]
    assert corr > 0.98


def test_path_length_through_a_slab_is_its_thickness_over_the_cosine():
    """A 40 mm thick plate across the beam: the central ray travels 40 mm, an oblique ray 40 / cos(angle)."""
    shape, spacing = (200, 30, 40), 2.0
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = -(np.array(shape) - 1) / 2 * spacing
    labels = np.zeros(shape, np.int16)
    labels[:, 5:25, :] = 1  # y from -20 mm to +20 mm: a coronal plate 40 mm thick, 400 mm wide
    projector = SlabProjector(np.zeros(shape, np.float32), labels, affine, [1])
    source, targets = rays(view_geometry("AP", 65))  # short SID: oblique rays at the edges
    path = projector.project(source, targets).path_mm[0, 0]
    assert float(path[32, 32]) == pytest.approx(40.0, abs=0.3)
    direction = targets[32, 62] - source
    cos = abs(float(direction[1] / direction.norm()))
    assert 1 / cos > 1.015  # the test only means something if the ray is oblique
    assert float(path[32, 62]) == pytest.approx(40.0 / cos, abs=0.3)


def test_line_integral_of_uniform_water_block():
    shape = (50, 50, 50)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = -49.0
    mu = np.full(shape, 0.02, np.float32)
    projector = SlabProjector(mu, np.zeros(shape, np.int16), affine, [])
    out = projector.project(*rays(view_geometry("PA", 33))).line_integral[0, 0]
    assert float(out[16, 16]) == pytest.approx(0.02 * 100.0, rel=0.02)  # 100 mm of water-like material
    assert float(out[0, 0]) == 0.0  # the corner ray misses the block


def test_projector_rejects_mismatched_label_map():
    with pytest.raises(ValueError, match="label map shape"):
        SlabProjector(np.zeros((4, 4, 4), np.float32), np.zeros((4, 4, 5), np.int16), np.eye(4), [1])


def test_batched_poses_equal_one_by_one(phantom):
    ids = [10, 51]
    proj = SlabProjector(np.zeros_like(phantom.hu), phantom.labels, phantom.affine, ids)
    g = view_geometry("PA", 48)
    poses = [Pose(), Pose((2.0, 0.0, -3.0), (5.0, 0.0, 0.0))]
    sets = [rays(g, p) for p in poses]
    batched = proj.project(torch.stack([s for s, _ in sets]), torch.stack([t for _, t in sets]), layers_per_slab=3)
    for i, (s, t) in enumerate(sets):
        torch.testing.assert_close(batched.path_mm[i], proj.project(s, t, layers_per_slab=3).path_mm[0])


def test_project_views_renders_every_pose_as_alone(phantom):
    """All poses of two views in one call: the images and path lengths of each view, bit for bit, as rendered alone."""
    ids = sorted(i for i in np.unique(phantom.labels) if i)
    mu = np.stack([np.full_like(phantom.hu, 0.02), (phantom.hu > 300).astype(np.float32) * 0.01])
    proj = SlabProjector(mu, phantom.labels, phantom.affine, ids)
    poses = [Pose(), Pose((4.0, -3.0, 5.0), (15.0, -10.0, 5.0)), Pose((-5.0, 2.0, -4.0), (-20.0, 5.0, 10.0))]
    views = [rays(view_geometry(v, 40), p) for v in ("PA", "LAT") for p in poses]
    batched = proj.project_views(views)
    alone = SlabProjector(mu, phantom.labels, phantom.affine, ids)
    for view, got in zip(views, batched, strict=True):
        alone.release()  # nothing shared with the batched call or the previous view
        want = alone.project(*view)
        assert torch.equal(got.line_integral, want.line_integral)
        assert torch.equal(got.path_mm, want.path_mm)
    assert batched[0].path_mm.any() and batched[3].line_integral.any()


def test_tiled_ray_search_finds_every_ray_that_crosses_a_label(phantom, monkeypatch):
    """The tile pre-filter keeps every ray the per-ray test keeps: the same path lengths as one tile per image."""
    import dataset_builder.projector as projector

    ids = sorted(i for i in np.unique(phantom.labels) if i)
    view = rays(view_geometry("AP", 50), Pose((3.0, -2.0, 4.0), (10.0, -5.0, 8.0)))  # 50 px: partial edge tiles
    tiled = SlabProjector(np.zeros_like(phantom.hu), phantom.labels, phantom.affine, ids).project(*view)
    monkeypatch.setattr(projector, "TILE_PX", 64)  # one tile holds the whole image: every ray gets the exact test
    whole = SlabProjector(np.zeros_like(phantom.hu), phantom.labels, phantom.affine, ids).project(*view)
    assert torch.equal(tiled.path_mm, whole.path_mm)


def test_project_views_rejects_views_of_different_sizes(phantom):
    proj = SlabProjector(np.zeros_like(phantom.hu), phantom.labels, phantom.affine, [1])
    with pytest.raises(ValueError, match="one size"):
        proj.project_views([rays(view_geometry("PA", 32)), rays(view_geometry("PA", 40))])
