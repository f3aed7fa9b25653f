"""From Hounsfield units to a radiograph-like 8-bit image: attenuation, image formation, clinical processing.

Attenuation, simplified on purpose: linear attenuation is proportional to physical density, ``mu = mu_water * (1 +
HU / 1000)``, and bone is boosted by ``bone_weight`` (at diagnostic energies the photoelectric effect makes calcium
attenuate more than its density says).

Image formation (:func:`display`), every parameter drawn per view and recorded (:class:`Appearance`):

1. beam hardening: a polyenergetic beam hardens in thick tissue, so the effective line integral grows less than
   linearly, ``L / (1 + beam_hardening * L)``;
2. primary fluence ``exp(-L)`` plus scatter, ``scatter_fraction`` x the primary blurred over
   ``scatter_sigma_mm`` (scatter is what lifts the mediastinum and softens its contrast);
3. the detector: its MTF as a Gaussian blur (``mtf_sigma_px``) and quantum noise from ``photons`` per pixel of an
   unattenuated beam (Poisson, as a Gaussian of variance ``I / photons``);
4. log conversion, a percentile window and a display gamma, then clinical processing, collimation and a marker
   (``chexanatomy.radiograph.apply_style``: dynamic-range compression, edge enhancement, a sigmoid look-up table).

``Appearance()`` (no randomisation) is the plain percentile-windowed line integral of the first releases.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from chexanatomy.radiograph import (
    MARKERS,
    RadiographStyle,
    apply_style,
    box_blur,
    gaussian_blur,
    normalise_percentiles,
    random_style,
)

MU_WATER_PER_MM = 0.019  # about 70 keV effective energy


@dataclass(frozen=True)
class Appearance:
    """Parameters of the HU -> attenuation -> radiograph chain, recorded with every corpus row.

    Attributes:
        bone_weight: attenuation multiplier for bone (fully applied above 400 HU, ramped from 150 HU).
        beam_hardening: ``b`` in ``L / (1 + b L)`` (0 = monoenergetic).
        scatter_fraction: scatter as a fraction of the blurred primary fluence (0 = no scatter).
        scatter_sigma_mm: width of the scatter kernel at the detector (mm).
        mtf_sigma_px: detector unsharpness, Gaussian sigma in pixels.
        photons: photons per pixel of the unattenuated beam (0 = no quantum noise).
        low_percentile, high_percentile: log-signal percentiles mapped to black and white.
        display_gamma: gamma of the windowed log signal (> 1 darkens the lungs, as a radiograph's look-up table
            does: at 1 the lungs of a rendered view are a mid grey, the domain-gap study's largest difference).
        virtual_non_contrast: whether the CT's enhanced blood pool was set to unenhanced blood
            (``dataset_builder.realism``); decided per CT from its label map.
        style: clinical processing, collimation and marker (``chexanatomy.radiograph.RadiographStyle``).
    """

    bone_weight: float = 1.8
    beam_hardening: float = 0.0
    scatter_fraction: float = 0.0
    scatter_sigma_mm: float = 60.0
    mtf_sigma_px: float = 0.0
    photons: float = 0.0
    low_percentile: float = 1.0
    high_percentile: float = 99.7
    display_gamma: float = 1.0
    virtual_non_contrast: bool = False
    style: RadiographStyle = field(default_factory=RadiographStyle)

    def to_dict(self) -> dict:
        """The parameters as a plain JSON-serialisable dict (``style`` nested)."""
        return {**asdict(self), "style": self.style.to_dict()}


def random_appearance(
    rng: np.random.Generator, physics: bool = True, processing: float = 1.0, view: str = "PA"
) -> Appearance:
    """A seeded draw of the domain randomisation ranges.

    Args:
        rng: the view's generator.
        physics: draw beam hardening, scatter, detector blur and quantum noise (else none of them).
        processing: strength of the clinical processing, collimation and markers in [0, 1] (0 = none).
        view: the view, for its marker texts (``chexanatomy.radiograph.MARKERS``).
    """
    return Appearance(
        bone_weight=float(rng.uniform(1.0, 1.6)),
        beam_hardening=float(rng.uniform(0.0, 0.15)) if physics else 0.0,
        scatter_fraction=float(rng.uniform(0.05, 0.5)) if physics else 0.0,
        scatter_sigma_mm=float(rng.uniform(30.0, 90.0)),
        mtf_sigma_px=float(rng.uniform(0.3, 1.0)) if physics else 0.0,
        photons=float(np.exp(rng.uniform(np.log(3e3), np.log(1e5)))) if physics else 0.0,
        low_percentile=float(rng.uniform(0.2, 3.0)),
        high_percentile=float(rng.uniform(99.0, 99.9)),
        display_gamma=float(np.exp(rng.uniform(np.log(1.2), np.log(1.75)))),
        style=random_style(rng, processing, MARKERS[view]) if processing > 0 else RadiographStyle(),
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


def display(
    line_integral: torch.Tensor, appearance: Appearance, rng: np.random.Generator, pixel_mm: float
) -> np.ndarray:
    """Form a radiograph from a line-integral image [H, W] (dimensionless) -> uint8 [H, W] (0 = black = air).

    ``pixel_mm`` is the detector pixel size, which turns the scatter kernel's width into pixels. Noise is drawn from
    ``rng`` (seeded per view), so the same view renders to the same bytes.
    """
    a = appearance
    line = line_integral.float().cpu().clamp(min=0)
    line = line / (1.0 + a.beam_hardening * line)
    fluence = torch.exp(-line)
    if a.scatter_fraction > 0:
        fluence = fluence + a.scatter_fraction * box_blur(fluence, a.scatter_sigma_mm / pixel_mm)
    fluence = gaussian_blur(fluence, a.mtf_sigma_px)
    if a.photons > 0:
        noise = torch.from_numpy(rng.standard_normal(tuple(fluence.shape)).astype(np.float32))
        fluence = fluence + noise * torch.sqrt(fluence / a.photons)
    signal = -torch.log(fluence.clamp(min=1e-6))
    x = apply_style(normalise_percentiles(signal, a.low_percentile, a.high_percentile) ** a.display_gamma, a.style)
    return (x * 255 + 0.5).to(torch.uint8).numpy()
