"""A procedural thorax phantom: a small synthetic CT with TotalSegmentator-named labels at known positions.

Fast enough for unit tests and the smoke run (``--source phantom``). Shapes are simple (ellipsoids,
cylinders, tubes) but placed anatomically, in world RAS+ mm with the origin in the middle of the chest:
+x = patient's right, +y = anterior, +z = superior. So the patient's left lung is at negative x, the heart
sits left of the midline and anterior, the spine posterior, the clavicles at the top, the ribs wrap
around the lungs and slope down anteriorly. Voxel index i increases towards +x (RAS orientation, unlike
the embedded CT's LAS), so laterality tests cover both orientations.
"""

from __future__ import annotations

import numpy as np

from chexanatomy.anatomy import TOTALSEG_V2

from .ct import CTVolume

_ID = {name: i for i, name in TOTALSEG_V2.items()}


def _grid(shape, spacing_mm):
    """World coordinates (x, y, z) in mm of every voxel centre, and the voxel->world affine."""
    affine = np.diag([*spacing_mm, 1.0])
    affine[:3, 3] = -(np.asarray(shape) - 1) / 2 * np.asarray(spacing_mm)
    axes = [np.arange(n) * s + o for n, s, o in zip(shape, spacing_mm, affine[:3, 3], strict=False)]
    return np.meshgrid(*axes, indexing="ij"), affine


def _ellipsoid(x, y, z, centre, radii):
    d2 = ((x - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2 + ((z - centre[2]) / radii[2]) ** 2
    return d2 <= 1


def _segment_tube(x, y, z, p0, p1, radius):
    """Voxels within ``radius`` mm of the segment p0-p1."""
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    d = p1 - p0
    t = np.clip(((x - p0[0]) * d[0] + (y - p0[1]) * d[1] + (z - p0[2]) * d[2]) / (d @ d), 0, 1)
    return (x - p0[0] - t * d[0]) ** 2 + (y - p0[1] - t * d[1]) ** 2 + (z - p0[2] - t * d[2]) ** 2 <= radius**2


def _ribs(x, y, z, hu, labels):
    """Twelve rib pairs: elliptical arcs around the lungs, posterior end high, anterior end lower."""
    radial = np.sqrt((x / 135.0) ** 2 + ((y + 5) / 95.0) ** 2)
    anterior = np.clip((y + 70) / 160.0, 0, 1)  # 0 at the spine, 1 at the front
    for i in range(1, 13):
        z_rib = 135 - 21 * (i - 1) - 35 * anterior
        ring = (np.abs(radial - (0.55 + 0.04 * min(i, 6))) * 120 < 5.5) & (np.abs(z - z_rib) < 5)
        ring &= (y < 60 - 4 * i) & (np.abs(x) > 22)
        for side, sign in (("right", 1), ("left", -1)):
            vox = ring & (sign * x > 0)
            hu[vox] = 800
            labels[vox] = _ID[f"rib_{side}_{i}"]


def make_thorax_phantom(shape=(96, 80, 72), spacing_mm=(4.0, 4.0, 5.0), subject_id="phantom") -> CTVolume:
    """Build the phantom CT (float32 HU) and its label map (int16, TotalSegmentator v2 ids)."""
    (x, y, z), affine = _grid(shape, spacing_mm)
    hu = np.full(shape, -1000.0, np.float32)
    labels = np.zeros(shape, np.int16)
    hu[((x / 165.0) ** 2 + ((y + 5) / 115.0) ** 2 <= 1) & (z < 170)] = 30  # soft-tissue body
    lungs = {
        "right": _ellipsoid(x, y, z, (68, -5, 20), (55, 72, 115)),
        "left": _ellipsoid(x, y, z, (-70, -5, 15), (52, 72, 112)),
    }
    for mask in lungs.values():
        hu[mask] = -850
    lobes = {
        "lung_upper_lobe_right": lungs["right"] & (z > 40 - 0.3 * y),
        "lung_middle_lobe_right": lungs["right"] & (z <= 40 - 0.3 * y) & (y > 0),
        "lung_lower_lobe_right": lungs["right"] & (z <= 40 - 0.3 * y) & (y <= 0),
        "lung_upper_lobe_left": lungs["left"] & (z > 10 - 0.4 * y),
        "lung_lower_lobe_left": lungs["left"] & (z <= 10 - 0.4 * y),
    }
    for name, mask in lobes.items():
        labels[mask] = _ID[name]
    heart = _ellipsoid(x, y, z, (-22, 30, -45), (62, 50, 55))
    hu[heart], labels[heart] = 45, _ID["heart"]
    trachea = ((x**2 + (y - 10) ** 2) <= 9**2) & (z > 45)
    hu[trachea], labels[trachea] = -1000, _ID["trachea"]
    sternum = _segment_tube(x, y, z, (0, 100, 120), (0, 105, 0), 11)
    hu[sternum], labels[sternum] = 600, _ID["sternum"]
    for i in range(1, 13):  # T1 at the top, 25 mm per level
        top = 150 - 25 * (i - 1)
        body = ((x**2 + (y + 75) ** 2) <= 18**2) & (z <= top) & (z > top - 23)
        hu[body], labels[body] = 700, _ID[f"vertebrae_T{i}"]
    _ribs(x, y, z, hu, labels)
    for side, sign in (("right", 1), ("left", -1)):
        clav = _segment_tube(x, y, z, (sign * 18, 95, 125), (sign * 135, 35, 150), 7)
        hu[clav], labels[clav] = 800, _ID[f"clavicula_{side}"]
    provenance = "Procedural thorax phantom (dataset_builder/phantom.py): synthetic shapes, no patient data."
    return CTVolume(subject_id, "phantom", hu, labels, affine, dict(TOTALSEG_V2), provenance)
