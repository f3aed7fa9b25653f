"""Radiograph-style image operations shared by the corpus renderer and the training augmentation.

A clinical chest radiograph is not a raw projection: the detector signal is log-converted, then processed with
multi-scale edge enhancement (a large-kernel unsharp mask compresses the dynamic range so that lungs and
mediastinum are both readable, a small-kernel one sharpens ribs and vessels), mapped through a sigmoid look-up
table, and framed by collimation with a burned-in side marker ("R", "L", "PA ERECT"). ``dataset_builder`` applies
these with seeded, recorded parameters to every rendered view; ``train`` draws them on the fly as augmentation.
They live here, in the core, so that both use one implementation.

Every function takes and returns float32 tensors ``[..., H, W]`` with values in [0, 1] (0 = black = no
attenuation, as displayed). Lengths are in pixels of the image they act on. None of them moves anatomy, so
masks stay exact.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

# Burned-in marker texts per view (the side letter alone is the most common).
MARKERS = {
    "PA": ("R", "L", "PA", "ERECT", "PA ERECT"),
    "AP": ("R", "L", "AP", "AP SUPINE", "PORTABLE", "SUPINE"),
    "LAT": ("L", "R", "LAT", "LEFT LAT", "ERECT"),
}


def gaussian_blur(image: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """Separable Gaussian blur of ``image`` [..., H, W] (replicate padding); ``sigma_px`` <= 0.05 returns it as is."""
    if sigma_px <= 0.05:
        return image
    radius = max(1, min(int(3 * sigma_px), min(image.shape[-2:]) - 1))
    x = torch.arange(-radius, radius + 1, dtype=image.dtype, device=image.device)
    kernel = torch.exp(-0.5 * (x / sigma_px) ** 2)
    kernel = kernel / kernel.sum()
    flat = image.reshape(-1, 1, *image.shape[-2:])
    out = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    out = F.conv2d(F.pad(out, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))
    return out.reshape(image.shape)


def box_blur(image: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """A wide Gaussian-like blur (three box passes at a quarter resolution) for kernels of tens of pixels."""
    h, w = image.shape[-2:]
    flat = image.reshape(-1, 1, h, w)
    small = F.interpolate(flat, scale_factor=0.25, mode="area") if min(h, w) >= 64 else flat
    scale = small.shape[-1] / w
    out = gaussian_blur(small, sigma_px * scale)
    return F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False).reshape(image.shape)


def unsharp_mask(image: torch.Tensor, sigma_px: float, amount: float) -> torch.Tensor:
    """``image + amount * (image - blur(image))``, not clipped.

    A small sigma enhances edges; a large one compresses the dynamic range (the low frequencies are subtracted).
    """
    blurred = gaussian_blur(image, sigma_px) if sigma_px < 8 else box_blur(image, sigma_px)
    return image + amount * (image - blurred)


def sigmoid_lut(image: torch.Tensor, centre: float, width: float) -> torch.Tensor:
    """A sigmoid look-up table rescaled so that 0 -> 0 and 1 -> 1; ``width`` > 0 sets its contrast (small = steep)."""
    lo, hi = (torch.sigmoid(torch.tensor((v - centre) / width)) for v in (0.0, 1.0))
    return ((torch.sigmoid((image - centre) / width) - lo) / (hi - lo)).clamp(0, 1)


def normalise_percentiles(image: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Map the ``low``-th and ``high``-th percentiles (0-100) of ``image`` [H, W] to 0 and 1, clipped."""
    lo, hi = np.percentile(image.float().cpu().numpy(), [low, high])
    return ((image - float(lo)) / max(float(hi - lo), 1e-6)).clamp(0, 1)


def collimate(image: torch.Tensor, borders: tuple[float, float, float, float], value: float) -> torch.Tensor:
    """Shutter the ``(top, bottom, left, right)`` border fractions of ``image`` [..., H, W] to grey ``value``."""
    h, w = image.shape[-2:]
    top, bottom, left, right = (int(round(f * n)) for f, n in zip(borders, (h, h, w, w), strict=True))
    out = image.clone()
    for rows, cols in (
        (slice(0, top), slice(None)),
        (slice(h - bottom, h), slice(None)),
        (slice(None), slice(0, left)),
        (slice(None), slice(w - right, w)),
    ):
        if (rows.stop or h) != (rows.start or 0) and (cols.stop or w) != (cols.start or 0):
            out[..., rows, cols] = value
    return out


def burn_marker(image: torch.Tensor, text: str, corner: str, height_frac: float, value: float) -> torch.Tensor:
    """Burn ``text`` into ``image`` [H, W] near ``corner`` (``tl``, ``tr``, ``bl``, ``br``) in grey ``value``.

    The letters are ``height_frac`` of the image height tall (PIL's bundled font, no file needed).
    """
    h, w = image.shape[-2:]
    size = max(6, int(round(height_frac * h)))
    font = ImageFont.load_default(size=size)
    canvas = Image.new("L", (w, h))
    draw = ImageDraw.Draw(canvas)
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
    margin = max(2, h // 40)
    x = margin if corner[1] == "l" else max(0, w - margin - (x1 - x0))
    y = margin if corner[0] == "t" else max(0, h - margin - (y1 - y0))
    draw.text((x - x0, y - y0), text, fill=255, font=font)
    ink = torch.from_numpy(np.asarray(canvas, dtype=np.float32) / 255.0).to(image.device)
    return image * (1 - ink) + value * ink


@dataclass(frozen=True)
class RadiographStyle:
    """Clinical processing and framing of one radiograph, applied by :func:`apply_style` in field order.

    Attributes:
        range_sigma_frac, range_amount: dynamic-range compression, an unsharp mask with a kernel of
            ``range_sigma_frac`` x image side (0 amount = off).
        edge_sigma_frac, edge_amount: edge enhancement, an unsharp mask with a small kernel.
        lut_centre, lut_width: sigmoid look-up table (see :func:`sigmoid_lut`); width 0 = no table.
        gamma: display gamma after the look-up table.
        collimation: ``(top, bottom, left, right)`` fractions of the image shuttered to ``collimation_value``.
        marker: burned-in text ("" = none), at ``marker_corner``, ``marker_height`` of the image tall, grey
            ``marker_value``.
    """

    range_sigma_frac: float = 0.06
    range_amount: float = 0.0
    edge_sigma_frac: float = 0.004
    edge_amount: float = 0.0
    lut_centre: float = 0.5
    lut_width: float = 0.0
    gamma: float = 1.0
    collimation: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    collimation_value: float = 1.0
    marker: str = ""
    marker_corner: str = "tr"
    marker_height: float = 0.04
    marker_value: float = 1.0

    def to_dict(self) -> dict:
        """The parameters as a plain JSON-serialisable dict (``collimation`` as a list)."""
        out = asdict(self)
        out["collimation"] = list(self.collimation)
        return out


def random_style(rng: np.random.Generator, strength: float = 1.0, markers=MARKERS["PA"]) -> RadiographStyle:
    """A seeded draw of clinical processing and framing (AnyCXR-style domain randomisation ranges).

    ``strength`` in [0, 1] scales the processing amounts (0 gives the identity processing, no collimation, no
    marker); ``markers`` are the texts a burned-in marker is drawn from.
    """
    s = float(strength)
    collimated = rng.random() < 0.5 * s
    borders = tuple(float(v) for v in rng.uniform(0.0, 0.05, 4)) if collimated else (0.0, 0.0, 0.0, 0.0)
    marked = rng.random() < 0.7 * s
    return RadiographStyle(
        range_sigma_frac=float(rng.uniform(0.03, 0.10)),
        range_amount=float(rng.uniform(0.0, 1.2) * s),
        edge_sigma_frac=float(rng.uniform(0.002, 0.008)),
        edge_amount=float(rng.uniform(0.0, 2.0) * s),
        lut_centre=float(0.5 + rng.uniform(-0.12, 0.12) * s),
        lut_width=float(1.0 / (1.0 + rng.uniform(0.0, 4.0) * s)),
        gamma=float(np.exp(rng.uniform(-0.35, 0.35) * s)),
        collimation=borders,
        collimation_value=float(rng.choice([0.0, 1.0]) if rng.random() < 0.3 else rng.uniform(0.75, 1.0)),
        marker=str(rng.choice(list(markers))) if marked else "",
        marker_corner=str(rng.choice(["tl", "tr", "bl", "br"])),
        marker_height=float(rng.uniform(0.025, 0.06)),
        marker_value=float(rng.uniform(0.85, 1.0)),
    )


def apply_style(image: torch.Tensor, style: RadiographStyle) -> torch.Tensor:
    """Clinical processing, framing and marker of ``style`` applied to ``image`` [H, W] in [0, 1] -> [H, W] in [0, 1].

    Deterministic: the same image and style give the same output.
    """
    side = float(max(image.shape[-2:]))
    x = image.float()
    if style.range_amount > 0:
        x = normalise_percentiles(unsharp_mask(x, style.range_sigma_frac * side, style.range_amount), 0.5, 99.5)
    if style.edge_amount > 0:
        x = unsharp_mask(x, style.edge_sigma_frac * side, style.edge_amount).clamp(0, 1)
    if style.lut_width > 0:
        x = sigmoid_lut(x, style.lut_centre, style.lut_width)
    if style.gamma != 1.0:
        x = x.clamp(0, 1) ** style.gamma
    if any(style.collimation):
        x = collimate(x, style.collimation, style.collimation_value)
    if style.marker:
        x = burn_marker(x, style.marker, style.marker_corner, style.marker_height, style.marker_value)
    return x.clamp(0, 1)


__all__ = [
    "MARKERS",
    "RadiographStyle",
    "apply_style",
    "box_blur",
    "burn_marker",
    "collimate",
    "gaussian_blur",
    "normalise_percentiles",
    "random_style",
    "sigmoid_lut",
    "unsharp_mask",
]
