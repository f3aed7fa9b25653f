"""diffdrr's own renderer on the same geometry: the reference our projector is measured against.

Used by ``bench/bench_render.py`` and the projector tests, never by the corpus build.
"""

from __future__ import annotations

import numpy as np
import torch
from diffdrr.data import read
from diffdrr.drr import DRR
from diffdrr.pose import RigidTransform
from torchio import LabelMap, ScalarImage

from .ct import CTVolume
from .geometry import Pose, ViewGeometry, camera_to_world

_STANDARD_POSE = Pose()  # no perturbation; Pose is frozen, so one shared default instance is safe


def _drr(ct: CTVolume, geometry: ViewGeometry, **kwargs) -> DRR:
    subject = read(
        ScalarImage(tensor=torch.from_numpy(ct.hu[None].astype(np.float32)), affine=ct.affine),
        LabelMap(tensor=torch.from_numpy(ct.labels[None].astype(np.int16)), affine=ct.affine),
        orientation=None,  # our poses carry the full camera-to-world transform
        center_volume=False,  # world = the CT's RAS mm, as in geometry.py
    )
    n = geometry.size_px
    return DRR(subject, geometry.sid_mm, n, geometry.pixel_mm, reverse_x_axis=geometry.view == "AP", **kwargs)


def siddon_path_lengths(
    ct: CTVolume, geometry: ViewGeometry, pose: Pose = _STANDARD_POSE, device="cpu"
) -> torch.Tensor:
    """Geometric path length (mm) through every label id, diffdrr Siddon with ``mask_to_channels=True``.

    Returns:
        float32 [C, H, W], channel c = label id c (C = max label + 1); channel 0 is background.
    """
    drr = _drr(ct, geometry)
    drr.density = torch.ones_like(drr.density)  # a new tensor: the subject's own density stays untouched
    return _render(drr.to(device), geometry, pose).cpu()


def siddon_default_renderer(ct: CTVolume, geometry: ViewGeometry, device="cpu"):
    """The default diffdrr renderer (Siddon, HU-derived density) for the view: the speed anchor.

    Returns:
        A callable ``pose -> [C, H, W]`` tensor, the image with all label channels (``pose`` defaults to the
        standard position). Building it (moving the CT to ``device``) is not part of the timed call.
    """
    drr = _drr(ct, geometry).to(device)
    return lambda pose=_STANDARD_POSE: _render(drr, geometry, pose)


def _render(drr: DRR, geometry: ViewGeometry, pose: Pose) -> torch.Tensor:
    matrix = torch.as_tensor(camera_to_world(geometry, pose), dtype=torch.float32)[None].to(drr.density.device)
    with torch.no_grad():
        return drr(RigidTransform(matrix), mask_to_channels=True)[0]
