"""Pseudo-subjects: seeded random 3-D deformations of one CT and its labels.

The embedded default has one real patient. To split by subject and still train on variety, each
pseudo-subject is the CT warped by a random anisotropic affine (body habitus, posture) composed with a
smooth elastic field (organ shape), applied to the CT (trilinear) and the labels (nearest neighbour) with
one sampling grid, so labels stay aligned with the anatomy they mark.

Written with ``torch.grid_sample`` rather than torchio's ``RandomAffine`` + ``RandomElasticDeformation``:
those resample twice through SimpleITK and took 43 s per pseudo-subject of the embedded CT on 2 cores; one
composed grid takes a few seconds. The elastic field is a sum of random low-frequency sinusoids (smooth by
construction, at most ~1.5 cycles across the volume), evaluated on a coarse grid and upsampled.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .ct import CTVolume
from .geometry import rotation_matrix_xyz


@dataclass(frozen=True)
class Deformation:
    """Parameters of one pseudo-subject's warp (all in world RAS+ mm around the volume centre).

    Attributes:
        scales: per-axis scale factors (x, y, z).
        rotation_deg: rotations about x, y, z (degrees).
        translation_mm: shift (x, y, z).
        max_displacement_mm: amplitude bound of the elastic field per axis.
    """

    scales: tuple[float, float, float]
    rotation_deg: tuple[float, float, float]
    translation_mm: tuple[float, float, float]
    max_displacement_mm: tuple[float, float, float]


def random_deformation(rng: np.random.Generator, strength: float = 1.0) -> Deformation:
    """A random pseudo-subject warp drawn from ``rng``; ``strength`` scales every range (0 gives the identity).

    Ranges at strength 1: scales 1 +- (0.12, 0.08, 0.08), rotations +- (4, 4, 6) degrees, shifts +- 5 mm per
    axis, elastic amplitude bound (12, 12, 8) mm.
    """
    s = float(strength)
    return Deformation(
        tuple(float(v) for v in 1 + rng.uniform(-1, 1, 3) * np.array([0.12, 0.08, 0.08]) * s),
        tuple(float(v) for v in rng.uniform(-1, 1, 3) * np.array([4.0, 4.0, 6.0]) * s),
        tuple(float(v) for v in rng.uniform(-5, 5, 3) * s),
        (12.0 * s, 12.0 * s, 8.0 * s),
    )


def _elastic(world: torch.Tensor, extent: np.ndarray, amp, rng: np.random.Generator) -> torch.Tensor:
    """Smooth displacement (mm) at world points [..., 3]: 4 random sinusoids per axis."""
    out = torch.zeros_like(world)
    for axis in range(3):
        for _ in range(4):
            freq = torch.tensor(rng.uniform(-1.5, 1.5, 3) / extent, dtype=world.dtype)
            phase = float(rng.uniform(0, 2 * np.pi))
            out[..., axis] += (amp[axis] / 4) * torch.sin(2 * np.pi * (world @ freq) + phase)
    return out


def _source_index_grid(ct: CTVolume, d: Deformation, rng: np.random.Generator, step: int = 4) -> torch.Tensor:
    """For every output voxel, the (continuous) source voxel index it samples; float32 [I, J, K, 3]."""
    shape = np.array(ct.hu.shape)
    coarse = [torch.linspace(0, n - 1, max(2, -(-n // step))) for n in shape]
    idx = torch.stack(torch.meshgrid(*coarse, indexing="ij"), -1).double()
    aff = torch.as_tensor(ct.affine)
    world = idx @ aff[:3, :3].T + aff[:3, 3]
    centre = torch.as_tensor(ct.affine[:3, :3] @ ((shape - 1) / 2) + ct.affine[:3, 3])
    extent = np.abs(ct.affine[:3, :3] @ shape)
    m = torch.as_tensor(rotation_matrix_xyz(d.rotation_deg) @ np.diag(d.scales))
    src_world = (world - centre - torch.tensor(d.translation_mm)) @ torch.linalg.inv(m).T + centre
    src_world = src_world + _elastic(world, extent, d.max_displacement_mm, rng)
    src_idx = (src_world - aff[:3, 3]) @ torch.linalg.inv(aff[:3, :3]).T
    grid = src_idx.permute(3, 0, 1, 2)[None].float()
    full = F.interpolate(grid, size=tuple(int(n) for n in shape), mode="trilinear", align_corners=True)
    return full[0].permute(1, 2, 3, 0)


def _resample(volume: np.ndarray, grid_idx: torch.Tensor, mode: str, fill: float, chunk: int = 16) -> np.ndarray:
    """Sample ``volume`` [I, J, K] at continuous voxel indices ``grid_idx`` [I, J, K, 3], slab by slab."""
    shape = torch.tensor(volume.shape, dtype=torch.float32)
    vol = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32)) - fill  # zero padding == fill
    vol = vol.permute(2, 1, 0)[None, None]  # grid_sample indexes (x, y, z) = (i, j, k) from the last axis
    out = np.empty(volume.shape, np.float32)
    for i0 in range(0, volume.shape[0], chunk):
        g = grid_idx[i0 : i0 + chunk] / (shape - 1) * 2 - 1
        out[i0 : i0 + chunk] = F.grid_sample(vol, g[None], mode=mode, align_corners=True)[0, 0].numpy() + fill
    return out


def deform(ct: CTVolume, seed: int, subject_id: str, strength: float = 1.0) -> tuple[CTVolume, Deformation]:
    """A deformed copy of ``ct`` named ``subject_id`` and its parameters; the same seed gives the same volume."""
    rng = np.random.default_rng(seed)
    params = random_deformation(rng, strength)
    grid = _source_index_grid(ct, params, rng)
    hu = _resample(ct.hu, grid, "bilinear", -1000.0)
    labels = _resample(ct.labels, grid, "nearest", 0.0).round().astype(np.int16)
    warped = CTVolume(subject_id, ct.source, hu, labels, ct.affine.copy(), dict(ct.label_names), ct.provenance)
    return warped, params
