"""Per-image features of a radiograph for the domain-gap study: intensity, texture and spectrum.

Every image is reduced the same way: grey levels (``chexanatomy.masks.grey_levels``, at full precision), resized to
``SIDE`` x ``SIDE`` (aspect ratio not kept; PIL bilinear with antialiasing), then percentile-normalised
(1st -> 0, 99th -> 1, clipped). Features per image (:func:`image_features`):

* ``histogram``: ``HIST_BINS`` bins on [0, 1], summing to 1.
* ``mean``, ``std``, ``skewness``, ``kurtosis`` (excess: 0 for a Gaussian) of the normalised intensities.
* ``entropy``: Shannon entropy of ``histogram``, in bits (at most log2(64) = 6).
* ``edge_density``: mean Sobel gradient magnitude, in normalised intensity per pixel of the 256 grid.
* ``hf_energy_ratio``: share of the power spectrum's energy (within the Nyquist disc, DC excluded) above
  ``HF_CUTOFF`` = 0.25 cycles per pixel (the upper half of the band): noise and fine texture.
* ``spectrum_slope``: slope of log10 power against log10 frequency of the radially averaged power spectrum, fitted
  over ``SLOPE_BAND`` = 0.02-0.4 cycles per pixel; natural images sit near -2, smoother images are steeper.
  The spectrum is taken after removing the mean and applying a 2-D Hann window, so that the image border does
  not add a spurious 1/f^2 component.

Written by hand on numpy/scipy: each feature is a few lines.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage, stats

from chexanatomy.masks import grey_levels

SIDE = 256
HIST_BINS = 64
W1_BINS = 256  # finer bins for the Wasserstein distance (binning error <= 1 / 512)
HF_CUTOFF = 0.25  # cycles per pixel
SLOPE_BAND = (0.02, 0.4)  # cycles per pixel
SCALAR_FEATURES = (
    "mean",
    "std",
    "skewness",
    "kurtosis",
    "entropy",
    "edge_density",
    "hf_energy_ratio",
    "spectrum_slope",
)


def normalised(image: Image.Image | np.ndarray, side: int = SIDE) -> np.ndarray:
    """An image as float32 [side, side] in [0, 1]: resized, then 1st percentile -> 0 and 99th -> 1, clipped.

    A flat image (99th percentile = 1st) comes back all zeros.
    """
    resized = np.asarray(Image.fromarray(grey_levels(image)).resize((side, side), Image.Resampling.BILINEAR))
    low, high = np.percentile(resized, [1, 99])
    if high <= low:
        return np.zeros((side, side), dtype=np.float32)
    return np.clip((resized - low) / (high - low), 0.0, 1.0).astype(np.float32)


def _power_2d(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Power spectrum of a square [N, N] image (mean removed, Hann window) and each bin's radius in cycles/image."""
    n = x.shape[0]
    window = np.outer(np.hanning(n), np.hanning(n))
    power = np.abs(np.fft.fftshift(np.fft.fft2((x - x.mean()) * window))) ** 2
    yy, xx = np.indices(power.shape) - n // 2
    return power, np.hypot(yy, xx)


def radial_spectrum(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged power spectrum of a square [N, N] image.

    Returns:
        (frequency, power): float [N/2], frequencies 1/N .. 1/2 cycles per pixel (integer radii 1 .. N/2),
        and the mean power over each one-pixel-wide annulus.
    """
    power, radius = _power_2d(x)
    ring = np.rint(radius).astype(int).ravel()
    mean = np.bincount(ring, power.ravel()) / np.maximum(np.bincount(ring), 1)
    radii = np.arange(1, x.shape[0] // 2 + 1)
    return radii / x.shape[0], mean[radii]


def _hf_energy_ratio(x: np.ndarray) -> float:
    power, radius = _power_2d(x)
    disc = (radius > 0) & (radius <= x.shape[0] / 2)
    total = power[disc].sum()
    return float(power[disc & (radius > HF_CUTOFF * x.shape[0])].sum() / total) if total > 0 else 0.0


def _spectrum_slope(x: np.ndarray) -> float:
    frequency, power = radial_spectrum(x)
    band = (frequency >= SLOPE_BAND[0]) & (frequency <= SLOPE_BAND[1]) & (power > 0)
    if band.sum() < 2:
        return 0.0
    return float(np.polyfit(np.log10(frequency[band]), np.log10(power[band]), 1)[0])


def _entropy_bits(histogram: np.ndarray) -> float:
    p = histogram[histogram > 0]
    return float(-(p * np.log2(p)).sum())


def _features_of(x: np.ndarray) -> dict[str, Any]:
    """The features of a normalised image float [SIDE, SIDE] in [0, 1]."""
    values = x.ravel().astype(np.float64)
    histogram = np.histogram(values, bins=HIST_BINS, range=(0.0, 1.0))[0] / values.size
    flat = values.std() == 0  # skewness/kurtosis are undefined for a constant image: report 0
    gradient = np.hypot(ndimage.sobel(x, axis=0), ndimage.sobel(x, axis=1)) / 8.0  # Sobel weights sum to 8
    return {
        "histogram": histogram.tolist(),
        "mean": float(values.mean()),
        "std": float(values.std()),
        "skewness": 0.0 if flat else float(stats.skew(values)),
        "kurtosis": 0.0 if flat else float(stats.kurtosis(values)),
        "entropy": _entropy_bits(histogram),
        "edge_density": float(gradient.mean()),
        "hf_energy_ratio": _hf_energy_ratio(x),
        "spectrum_slope": _spectrum_slope(x),
    }


def image_features(image: Image.Image | np.ndarray) -> dict[str, Any]:
    """The features of one image (see the module docstring for definitions and units).

    Returns:
        ``{"histogram": list[HIST_BINS] summing to 1, "mean", "std", "skewness", "kurtosis", "entropy",
        "edge_density", "hf_energy_ratio", "spectrum_slope"}`` (plain floats).
    """
    return _features_of(normalised(image))


def describe(image: Image.Image | np.ndarray) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """One normalisation, three uses: features, a ``W1_BINS`` pixel-count histogram, the radial power spectrum."""
    x = normalised(image)
    fine = np.histogram(x, bins=W1_BINS, range=(0.0, 1.0))[0].astype(np.float64)
    return _features_of(x), fine, radial_spectrum(x)[1]


__all__ = [
    "HF_CUTOFF",
    "HIST_BINS",
    "SCALAR_FEATURES",
    "SIDE",
    "SLOPE_BAND",
    "W1_BINS",
    "describe",
    "image_features",
    "normalised",
    "radial_spectrum",
]
