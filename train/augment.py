"""On-the-fly augmentation for radiographs, shared by both trainers (``train.unet`` and the VLM's collator).

Two independent parts, each applied with its own probability:

* **Geometry** (image and masks together, so masks stay exact up to resampling): zoom 0.7-1.25 (below 1 the
  radiograph shrinks onto a black canvas, the paper's scale augmentation; above 1 it is cropped), rotation
  +-10 degrees, a shift of up to 8 % of the side and, when asked for, a vertical stretch (``aspect``: below 1 the
  chest is foreshortened head to foot, as in an AP or lordotic projection) and a smooth deformation (``deform``: a
  random displacement field drawn on a coarse grid over the source and interpolated, so organ outlines change shape,
  not only size, while the frame's edges stay straight; the corpus's pseudo-subjects are variations of one CT and
  their lungs share one outline). Laterality is never
  flipped: a mirrored chest is not a chest.
* **Radiograph style** (image only): clinical processing, look-up table, gamma, collimation and a burned-in marker
  drawn by ``chexanatomy.radiograph.random_style`` (the renderer's own ranges, so train-time and render-time
  styles cover each other), then detector blur and noise.

Tensors: image float32 [1, S, S] in [0, 1]; masks float32 [C, S, S] in {0, 1}.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from chexanatomy.radiograph import apply_style, gaussian_blur, random_style


@dataclass(frozen=True)
class RadiographAugmentation:
    """Ranges and probabilities of :func:`augment_radiograph`.

    Attributes:
        geometry_p: probability of the geometric part.
        zoom: (min, max) scale factor; < 1 shrinks onto a black canvas.
        max_rotation_deg: rotation range (+-).
        max_shift: shift range (+-) as a fraction of the side.
        aspect: (min, max) vertical stretch, height over width, drawn log-uniformly; (1, 1) is off (the default:
            the recipes before it did not use it).
        deform: largest displacement of the smooth deformation, a fraction of the side, drawn per inner control
            point of a ``deform_points`` x ``deform_points`` grid over the source image (the outer ring stays, so
            the frame's edges stay straight) and interpolated bicubically; 0 is off (the default, for the same
            reason).
        style_p: probability of the radiograph-style part.
        max_blur_px, max_noise: detector blur sigma and Gaussian noise std ranges (from 0).
    """

    geometry_p: float = 0.7
    zoom: tuple[float, float] = (0.7, 1.25)
    max_rotation_deg: float = 10.0
    max_shift: float = 0.08
    aspect: tuple[float, float] = (1.0, 1.0)
    deform: float = 0.0
    deform_points: int = 5  # at least 3: the outer ring of control points stays fixed (smooth_displacement)
    style_p: float = 0.8
    max_blur_px: float = 1.2
    max_noise: float = 0.03


def warp(
    image: torch.Tensor,
    masks: torch.Tensor,
    zoom: float,
    angle_deg: float,
    shift: tuple[float, float],
    aspect: float = 1.0,
    displacement: torch.Tensor | None = None,
):
    """Stretch, zoom about the centre, rotate and shift ``image`` [1, S, S] and ``masks`` [C, S, S] with one grid.

    ``aspect`` stretches the content vertically about the centre (2.0: twice as tall, same width) before the
    rotation. ``shift`` is ``(dx, dy)`` as fractions of the side (+ = right, down). ``displacement`` [S, S, 2]
    (x, y; grid_sample's units, 2 = the side; :func:`smooth_displacement`) is a field over the *source* image: each
    output pixel samples the source at ``a + displacement(a)``, where ``a`` is its affine source position. A field
    that is 0 on the source's border leaves the frame's edges, and a collimation border along them, straight (as in
    every real radiograph) and bends only what lies inside. Outside the source the image is black and the masks
    empty; masks are resampled bilinearly and thresholded at 0.5.
    """
    a = math.radians(angle_deg)
    cos, sin = math.cos(a) / zoom, math.sin(a) / zoom
    theta = torch.tensor([[cos, -sin, -2 * shift[0] * cos + 2 * shift[1] * sin],
                          [sin, cos, -2 * shift[0] * sin - 2 * shift[1] * cos]], dtype=torch.float32)  # fmt: skip
    theta[1] /= aspect  # the output-to-source map: undo the stretch last
    both = torch.cat([image, masks])[None]
    grid = F.affine_grid(theta[None], list(both.shape), align_corners=False)
    if displacement is not None:  # the field at each affine source position; none outside the source
        field = displacement.permute(2, 0, 1)[None].to(grid.dtype)
        at_source = F.grid_sample(field, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        grid = grid + at_source.permute(0, 2, 3, 1)
    out = F.grid_sample(both, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    return out[:1], (out[1:] > 0.5).float()


def smooth_displacement(size: int, amplitude: float, points: int, rng: random.Random) -> torch.Tensor:
    """A smooth random displacement field [size, size, 2] (x, y) over the source image, for :func:`warp`.

    Of ``points`` x ``points`` control points spanning the image (corners included), the outer ring stays at 0, so
    the frame's edges do not move; each inner one moves by up to ``amplitude`` of the side in x and in y,
    uniformly; bicubic interpolation in between. With 5 points (3 x 3 that move) and 0.05 a lung's outline bends by
    up to ~6 px at 128 px while its place and side stay; the field's slope stays far below 1, so nothing folds.
    """
    if points < 3:
        raise ValueError(f"deform_points must be at least 3 (the outer ring stays fixed), got {points}")
    inner = points - 2
    control = torch.tensor([rng.uniform(-amplitude, amplitude) for _ in range(2 * inner * inner)])
    control = F.pad(control.reshape(1, 2, inner, inner), (1, 1, 1, 1))  # the outer ring: no displacement
    control = control * 2  # fraction of the side -> grid units (the side spans 2)
    field = F.interpolate(control, size=(size, size), mode="bicubic", align_corners=True)
    return field[0].permute(1, 2, 0).contiguous()


def check_aspect(aspect) -> None:
    """Raise ``ValueError`` (a one-line usage error) unless ``aspect`` is two stretch factors, 0 < min <= max."""
    if len(aspect) != 2 or not 0 < aspect[0] <= aspect[1]:
        raise ValueError(f"--augment_aspect takes two stretch factors, 0 < min <= max, got {list(aspect)}")


def check_deform(deform: float) -> None:
    """Raise ``ValueError`` (a one-line usage error) unless ``deform`` is 0 (off) to 0.2 of the side."""
    if not 0 <= deform <= 0.2:
        raise ValueError(f"--augment_deform is the largest displacement as a fraction of the side, 0-0.2, got {deform}")


def restyle(image: torch.Tensor, rng: random.Random, config: RadiographAugmentation) -> torch.Tensor:
    """``image`` [1, S, S] with a random radiograph style, detector blur and noise (drawn from ``rng``)."""
    generator = np.random.default_rng(rng.getrandbits(63))
    x = apply_style(image[0], random_style(generator))
    x = gaussian_blur(x, rng.uniform(0.0, config.max_blur_px))
    noise = rng.uniform(0.0, config.max_noise)
    if noise > 0:
        x = x + noise * torch.from_numpy(generator.standard_normal(tuple(x.shape)).astype(np.float32))
    return x.clamp(0, 1)[None]


def augment_radiograph(
    image: torch.Tensor,
    masks: torch.Tensor,
    rng: random.Random,
    config: RadiographAugmentation = RadiographAugmentation(),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Geometry (image and masks) and radiograph style (image) at random; returns new tensors, inputs untouched."""
    if rng.random() < config.geometry_p:
        zoom = math.exp(rng.uniform(math.log(config.zoom[0]), math.log(config.zoom[1])))
        angle = rng.uniform(-config.max_rotation_deg, config.max_rotation_deg)
        shift = (rng.uniform(-config.max_shift, config.max_shift), rng.uniform(-config.max_shift, config.max_shift))
        aspect = 1.0
        if config.aspect != (1.0, 1.0):  # drawn only when asked for: the recipes before it keep their random stream
            aspect = math.exp(rng.uniform(math.log(config.aspect[0]), math.log(config.aspect[1])))
        displacement = None
        if config.deform > 0:  # drawn only when asked for, as the stretch
            displacement = smooth_displacement(image.shape[-1], config.deform, config.deform_points, rng)
        image, masks = warp(image, masks, zoom, angle, shift, aspect, displacement)
    if rng.random() < config.style_p:
        image = restyle(image, rng, config)
    return image, masks


__all__ = [
    "RadiographAugmentation",
    "augment_radiograph",
    "check_aspect",
    "check_deform",
    "restyle",
    "smooth_displacement",
    "warp",
]
