"""Radiograph geometry: where the X-ray source and detector sit for PA, AP and lateral views.

World coordinates are the CT's RAS+ frame in millimetres (+x = patient's right, +y = anterior,
+z = superior), as nibabel and torchio report them. The detector is diffdrr's ``Detector``; we build its
camera-to-world pose explicitly instead of using diffdrr's ``orientation="PA"/"AP"`` presets (with its
"PA" preset and a positive translation the source and detector end up on the same side of the patient).

Display convention (tested in ``tests/test_laterality.py``):

* PA and AP: the patient's right on the image left, head up (radiological convention).
* Lateral: a *left lateral* (left side against the detector, beam from right to left), displayed as
  seen from the patient's left: anterior (sternum) on the image left, spine on the image right, head up.

Image pixels are indexed ``[row, col]`` = ``[y, x]`` with ``(0, 0)`` the top-left corner.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from diffdrr.detector import Detector
from diffdrr.pose import RigidTransform

# view -> (source-to-image distance, magnification at the isocentre, beam direction, image-right
# direction, image-down direction) in world coordinates. Magnification 1.1 puts the isocentre
# SID/1.1 from the source, i.e. the patient close to the detector as in a real radiograph.
_VIEWS = {
    "PA": (1800.0, 1.10, (0, 1, 0), (-1, 0, 0), (0, 0, -1)),
    "AP": (1000.0, 1.15, (0, -1, 0), (-1, 0, 0), (0, 0, -1)),
    "LAT": (1800.0, 1.10, (-1, 0, 0), (0, -1, 0), (0, 0, -1)),
}
VIEWS = tuple(_VIEWS)
FRONTAL_VIEWS = ("PA", "AP")  # the patient's right on the image left (radiological convention); LAT is lateral
DETECTOR_MM = 430.0


@dataclass(frozen=True)
class Pose:
    """A small patient-pose perturbation about the isocentre.

    Attributes:
        rotation_deg: rotations about the world x, y, z axes (degrees), applied in that order.
        translation_mm: shift of the patient in world x, y, z (mm); a shift along the beam changes the
            magnification, a shift across it moves the anatomy in the image.
    """

    rotation_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    translation_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)


@dataclass(frozen=True)
class ViewGeometry:
    """The geometry of one rendered view, recorded with every corpus row.

    Attributes:
        view: ``"PA"``, ``"AP"`` or ``"LAT"``.
        size_px: detector height = width in pixels (224-1024).
        sid_mm: source-to-image (detector) distance.
        sod_mm: source-to-isocentre distance (SID / magnification).
        detector_mm: physical detector side length.
        pixel_mm: detector pixel spacing (``detector_mm / size_px``).
        isocenter_mm: world point (RAS mm) placed on the central ray, SOD from the source.
    """

    view: str
    size_px: int
    sid_mm: float
    sod_mm: float
    detector_mm: float
    pixel_mm: float
    isocenter_mm: tuple[float, float, float]

    def to_dict(self) -> dict:
        """The fields as a plain ``{field: value}`` dict (``isocenter_mm`` stays a tuple)."""
        return asdict(self)


def view_geometry(
    view: str, size_px: int, isocenter_mm=(0.0, 0.0, 0.0), detector_mm: float = DETECTOR_MM
) -> ViewGeometry:
    """The standard geometry of ``view`` at ``size_px`` pixels, centred on ``isocenter_mm`` (RAS mm).

    ``detector_mm`` is the side of the (square) imaged field at the detector; 430 mm is a 17-inch cassette.
    """
    if view not in _VIEWS:
        raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
    if not 32 <= size_px <= 2048:
        raise ValueError(f"size_px must be in 32..2048, got {size_px}")
    sid, mag, *_ = _VIEWS[view]
    iso = tuple(float(v) for v in isocenter_mm)
    return ViewGeometry(view, size_px, sid, sid / mag, float(detector_mm), float(detector_mm) / size_px, iso)


@dataclass(frozen=True)
class Framing:
    """How a radiographer frames the chest: the lungs fill most of the image width, the apices just below the top.

    Attributes:
        fill: the lungs' width across the image (at the isocentre) as a fraction of the field; the field grows when
            the lungs' height would not fit between ``top`` and a 10 % margin at the bottom.
        top: the lung apices lie this fraction of the field below the image's top edge.
        across: shift of the image centre towards the image right, fraction of the field.
    """

    fill: float = 0.8
    top: float = 0.08
    across: float = 0.0

    def to_dict(self) -> dict:
        """The fields as a plain dict."""
        return asdict(self)


def random_framing(rng: np.random.Generator) -> Framing:
    """A seeded framing draw: fill 0.70-0.90, apices 0.03-0.14 of the field below the top, +-0.04 across."""
    return Framing(float(rng.uniform(0.70, 0.90)), float(rng.uniform(0.03, 0.14)), float(rng.uniform(-0.04, 0.04)))


def framed_geometry(
    view: str, size_px: int, lung_box_mm: tuple[np.ndarray, np.ndarray], framing: Framing
) -> ViewGeometry:
    """The geometry of ``view`` whose field is fitted to the lungs' world box (RAS mm ``(min, max)``) by ``framing``.

    The field side at the isocentre is the lungs' width across the image (frontal: both lungs side to side;
    lateral: front to back) divided by ``framing.fill``, or larger when their height needs it; the detector side is
    that times the view's magnification. Placement ignores the pose, which then moves the patient in the field.
    """
    sid, mag, _, right, down = _VIEWS[view]
    lo, hi = (np.asarray(v, dtype=np.float64) for v in lung_box_mm)
    right, down = np.asarray(right, float), np.asarray(down, float)
    extent = hi - lo
    width, height = abs(float(np.dot(extent, np.abs(right)))), abs(float(np.dot(extent, np.abs(down))))
    field = max(width / framing.fill, height / (0.9 - framing.top))
    centre = (lo + hi) / 2
    apex = centre - down * height / 2  # the lungs' top, on the image's vertical axis
    iso = apex + down * (field / 2 - framing.top * field) + right * framing.across * field
    # keep the isocentre's depth along the beam at the lungs' centre (magnification as in view_geometry)
    return view_geometry(view, size_px, iso, field * mag)


def rotation_matrix_xyz(deg) -> np.ndarray:
    """3x3 rotation about world x, then y, then z (degrees)."""
    ax, ay, az = np.deg2rad(np.asarray(deg, dtype=np.float64))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def camera_to_world(geometry: ViewGeometry, pose: Pose = Pose()) -> np.ndarray:
    """4x4 float64 camera-to-world matrix for diffdrr's detector (``reverse_x_axis=False``).

    diffdrr's camera has the source at the origin and the detector centre at ``+z * SID``; with
    ``reverse_x_axis=False`` image column increases along camera +x and image row along camera -y. So the
    camera axes are (image-right, image-up, beam). A pose moves the patient; we apply its inverse to the
    camera, which is equivalent and keeps the CT untouched.
    """
    _, _, beam, right, down = _VIEWS[geometry.view]
    beam, right, down = (np.asarray(v, dtype=np.float64) for v in (beam, right, down))
    if geometry.view == "AP":
        # Seen from the source, AP has the patient's right on the image left, which a right-handed camera
        # with columns along +x cannot express (it is a mirror image of PA); diffdrr's reverse_x_axis
        # detector runs columns along camera -x, so its x axis points to image-left.
        right = -right
    rot = np.stack([right, -down, beam], axis=1)
    iso = np.asarray(geometry.isocenter_mm, dtype=np.float64)
    cam = np.eye(4)
    cam[:3, :3] = rot
    cam[:3, 3] = iso - geometry.sod_mm * beam
    # Moving the patient by (R, t) about the isocentre == moving the camera by the inverse.
    r = rotation_matrix_xyz(pose.rotation_deg)
    patient = np.eye(4)
    patient[:3, :3] = r
    patient[:3, 3] = iso + np.asarray(pose.translation_mm) - r @ iso
    return np.linalg.inv(patient) @ cam


def rays(geometry: ViewGeometry, pose: Pose = Pose()) -> tuple[torch.Tensor, torch.Tensor]:
    """Source and detector-pixel positions of every ray, in world RAS mm.

    Returns:
        source: float32 [3].
        targets: float32 [H, W, 3], ``targets[row, col]`` is the centre of that detector pixel in the
            display convention of the module docstring.
    """
    n = geometry.size_px
    det = Detector(
        geometry.sid_mm,
        n,
        n,
        geometry.pixel_mm,
        geometry.pixel_mm,
        0.0,
        0.0,
        torch.eye(4),
        reverse_x_axis=geometry.view == "AP",
    )
    pose = RigidTransform(torch.as_tensor(camera_to_world(geometry, pose), dtype=torch.float32)[None])
    source, targets = det(pose, None)
    return source.view(3), targets.view(n, n, 3)
