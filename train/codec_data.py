"""Training data for the mask codec: projected anatomy masks from a built corpus, augmented on the fly.

Masks are read straight from the corpus's Parquet shards with pyarrow (no ``datasets`` needed, so this runs on
a bare GPU machine too). Each mask is kept as a square, aspect-preserving crop around its box with a margin;
a batch applies a random affine (rotation, anisotropic scale, shear) and a smooth elastic warp to the crops on
the training device, re-thresholds, and takes the tight box of the warped mask through the very function the
tokenizer uses (``chexanatomy.mask_tokens.crop_masks``), so the codec trains on the same input it encodes.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from PIL import Image

from chexanatomy.anatomy import tokenisable
from chexanatomy.mask_tokens import crop_masks, tight_boxes

CANVAS = 128  # side of the square crop the augmentation works on (pixels)


@dataclass
class MaskBank:
    """Square crops of corpus masks.

    Attributes:
        crops: uint8 [N, CANVAS, CANVAS] in {0, 1}: each mask's box, aspect kept, with a margin, resized.
        names: [N] structure names.
        subjects: [N] subject ids.
    """

    crops: torch.Tensor
    names: list[str]
    subjects: list[str]


def _square_crop(mask: np.ndarray, bbox, margin: float = 0.2) -> np.ndarray:
    """The box enlarged to a square with ``margin`` on each side, cut from ``mask`` (zero outside)."""
    y0, x0, y1, x1 = bbox
    side = int(np.ceil(max(y1 - y0, x1 - x0) * (1 + 2 * margin))) + 2
    cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
    out = np.zeros((side, side), bool)
    top, left = cy - side // 2, cx - side // 2
    ys, xs = slice(max(top, 0), min(top + side, mask.shape[0])), slice(max(left, 0), min(left + side, mask.shape[1]))
    out[ys.start - top : ys.stop - top, xs.start - left : xs.stop - left] = mask[ys, xs]
    return out


def _to_canvas(square: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(square.astype(np.float32))[None, None]
    return (F.interpolate(t, size=(CANVAS, CANVAS), mode="bilinear", antialias=True)[0, 0] > 0.5).to(torch.uint8)


def load_mask_bank(corpus_dir: str | Path, splits=("train",), min_area_px: int = 16) -> MaskBank:
    """All tokenisable structure masks of ``splits`` in a corpus folder, as square crops (see ``MaskBank``)."""
    files = [f for s in splits for f in sorted((Path(corpus_dir) / "data").glob(f"{s}-*.parquet"))]
    if not files:
        raise FileNotFoundError(f"no shards of splits {splits} in {corpus_dir}/data; build the corpus first")
    crops, names, subjects = [], [], []
    for f in files:
        table = pq.read_table(f, columns=["subject_id", "structures"])
        # Two columns of one table: equal length.
        columns = table.column("subject_id").to_pylist(), table.column("structures").to_pylist()
        for subject, structures in zip(*columns, strict=True):
            for s in structures:
                if s["area_px"] < min_area_px or not tokenisable(s["name"]):
                    continue
                mask = np.asarray(Image.open(io.BytesIO(s["mask"]["bytes"])), dtype=bool)
                crops.append(_to_canvas(_square_crop(mask, s["bbox"])))
                names.append(s["name"])
                subjects.append(subject)
    return MaskBank(torch.stack(crops), names, subjects)


def full_masks(corpus_dir: str | Path, splits=("validation", "test")):
    """Yield (subject, view, image size, names, bool masks [N, H, W]) per image of ``splits``."""
    files = [f for s in splits for f in sorted((Path(corpus_dir) / "data").glob(f"{s}-*.parquet"))]
    for f in files:
        table = pq.read_table(f, columns=["subject_id", "view", "geometry", "structures"])
        for row in table.to_pylist():
            size = row["geometry"]["size_px"]
            names = [s["name"] for s in row["structures"]]
            masks = np.stack(
                [np.asarray(Image.open(io.BytesIO(s["mask"]["bytes"])), dtype=bool) for s in row["structures"]]
            )
            yield row["subject_id"], row["view"], (size, size), names, masks


@dataclass(frozen=True)
class Augmentation:
    """Ranges of the random warp applied to every training crop (uniform draws)."""

    max_rotation_deg: float = 20.0
    log_scale: float = 0.25  # per-axis scale in exp(+-log_scale)
    max_shear: float = 0.15
    elastic_px: float = 4.0  # amplitude of the smooth displacement, canvas pixels


def _affine_grid(n: int, aug: Augmentation, gen: torch.Generator, device) -> torch.Tensor:
    u = lambda *shape: torch.rand(*shape, generator=gen) * 2 - 1  # noqa: E731
    theta = u(n) * np.deg2rad(aug.max_rotation_deg)
    scale = torch.exp(u(n, 2) * aug.log_scale)
    shear = u(n) * aug.max_shear
    cos, sin = torch.cos(theta), torch.sin(theta)
    rot = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    shear_m = torch.eye(2).repeat(n, 1, 1)
    shear_m[:, 0, 1] = shear
    lin = rot @ shear_m @ torch.diag_embed(1 / scale)
    mat = torch.cat([lin, torch.zeros(n, 2, 1)], -1).to(device)
    return F.affine_grid(mat, (n, 1, CANVAS, CANVAS), align_corners=False)


def augmented_batch(
    bank: MaskBank, batch: int, aug: Augmentation | None, gen: torch.Generator, device, resize="bilinear"
):
    """A training batch: [B, 64, 64] float32 in [0, 1] codec inputs (tight-box crops of warped masks)."""
    idx = torch.randint(len(bank.crops), (batch,), generator=gen)
    x = bank.crops[idx].to(device, torch.float32)[:, None]
    if aug is not None:
        grid = _affine_grid(batch, aug, gen, device)
        coarse = (torch.rand(batch, 2, 5, 5, generator=gen) * 2 - 1).to(device) * (2 * aug.elastic_px / CANVAS)
        displacement = F.interpolate(coarse, size=(CANVAS, CANVAS), mode="bicubic", align_corners=True)
        grid = grid + displacement.permute(0, 2, 3, 1)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    masks = (x[:, 0] > 0.5).cpu().numpy()
    keep = masks.reshape(batch, -1).any(1)
    masks = masks[keep]
    return crop_masks(masks, tight_boxes(masks), resize).to(device)


class AugmentedStream(torch.utils.data.IterableDataset):
    """Endless augmented batches (CPU), one independent seeded stream per DataLoader worker.

    Crop generation, not the network, dominates a CPU step; on a GPU machine several workers keep the
    GPU busy. Batches are float32 [B', 64, 64] (B' <= B: masks warped out of the canvas are dropped).
    """

    def __init__(self, bank: MaskBank, batch: int, aug: Augmentation | None, seed: int, resize: str = "bilinear"):
        super().__init__()
        self.bank, self.batch, self.aug, self.seed, self.resize = bank, batch, aug, seed, resize

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker = 0 if info is None else info.id
        if info is not None:
            torch.set_num_threads(1)
        gen = torch.Generator().manual_seed(self.seed * 1000 + worker)
        while True:
            yield augmented_batch(self.bank, self.batch, self.aug, gen, "cpu", self.resize)
