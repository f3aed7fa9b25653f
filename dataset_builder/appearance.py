"""From Hounsfield units to a radiograph-like 8-bit image, with optional seeded domain randomisation.

Physics, simplified on purpose: linear attenuation is proportional to physical density, ``mu =
mu_water * (1 + HU / 1000)``, and bone is boosted by ``bone_weight`` (at diagnostic energies the
photoelectric effect makes calcium attenuate more than its density says). A detector records
``exp(-integral mu)``; radiographs are displayed on a log scale, so brightness follows the line integral:
bone and heart bright, aerated lung dark. The display transform normalises the line integral between two
percentiles, applies a gamma, then optional blur and noise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

MU_WATER_PER_MM = 0.019  # about 70 keV effective energy


@dataclass(frozen=True)
class Appearance:
    """Parameters of the HU -> attenuation -> display chain, recorded with every corpus row.

    Attributes:
        bone_weight: attenuation multiplier for bone (fully applied above 400 HU, ramped from 150 HU).
        low_percentile, high_percentile: line-integral percentiles mapped to 0 and 1.
        gamma: display gamma (< 1 brightens soft tissue).
        blur_sigma_px: Gaussian blur of the displayed image (detector unsharpness), pixels.
        noise_std: standard deviation of additive Gaussian noise on the [0, 1] image.
    """

    bone_weight: float = 1.8
    low_percentile: float = 1.0
    high_percentile: float = 99.7
    gamma: float = 0.9
    blur_sigma_px: float = 0.0
    noise_std: float = 0.0

    def to_dict(self) -> dict:
        """The parameters as a plain ``{field: value}`` dict (JSON-serialisable floats)."""
        return asdict(self)


def random_appearance(rng: np.random.Generator) -> Appearance:
    """A seeded draw of the domain randomisation ranges (bone contrast, window, gamma, blur, noise)."""
    return Appearance(
        bone_weight=float(rng.uniform(1.3, 2.5)),
        low_percentile=float(rng.uniform(0.5, 3.0)),
        high_percentile=float(rng.uniform(99.3, 99.9)),
        gamma=float(rng.uniform(0.7, 1.2)),
        blur_sigma_px=float(rng.uniform(0.0, 1.0)),
        noise_std=float(rng.uniform(0.0, 0.02)),
    )


def attenuation_channels(hu: np.ndarray) -> np.ndarray:
    """float32 [2, I, J, K] attenuation (1/mm): channel 0 plain (air = 0), channel 1 its bone part.

    The attenuation with a bone boost ``w`` is ``ch0 + (w - 1) * ch1``; both channels are projected in one
    pass and mixed per view (``mix_line_integrals``), so each view can draw its own bone contrast.
    """
    hu = np.asarray(hu, dtype=np.float32)
    mu = MU_WATER_PER_MM * np.clip(1.0 + hu / 1000.0, 0.0, None)
    bone = mu * np.clip((hu - 150.0) / 250.0, 0.0, 1.0)
    return np.stack([mu, bone]).astype(np.float32)


def mix_line_integrals(channels: torch.Tensor, appearance: Appearance) -> torch.Tensor:
    """[2, H, W] line integrals of ``attenuation_channels`` -> [H, W] with the view's bone weight."""
    return channels[0] + (appearance.bone_weight - 1.0) * channels[1]


def _gaussian_blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=img.dtype, device=img.device)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = k / k.sum()
    out = F.conv2d(F.pad(img[None, None], (radius, radius, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    out = F.conv2d(F.pad(out, (0, 0, radius, radius), mode="replicate"), k.view(1, 1, -1, 1))
    return out[0, 0]


def display(line_integral: torch.Tensor, appearance: Appearance, rng: np.random.Generator) -> np.ndarray:
    """Map a line-integral image [H, W] to a uint8 radiograph [H, W] (0 = black = no attenuation)."""
    img = line_integral.float().cpu()
    lo, hi = np.percentile(img.numpy(), [appearance.low_percentile, appearance.high_percentile])
    x = ((img - lo) / max(hi - lo, 1e-6)).clamp(0, 1) ** appearance.gamma
    if appearance.blur_sigma_px > 0.05:
        x = _gaussian_blur(x, appearance.blur_sigma_px)
    if appearance.noise_std > 0:
        noise = rng.normal(0.0, appearance.noise_std, size=tuple(x.shape)).astype(np.float32)
        x = x + torch.from_numpy(noise)
    return (x.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
