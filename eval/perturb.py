"""Controlled geometric perturbations of a radiograph and its anatomy masks, applied identically to both.

    from eval.perturb import DEFAULT_SWEEP, Perturbation
    image2, masks2 = Perturbation("rotate", 10).apply(image, masks)    # 10 degrees counter-clockwise
    for perturbation in DEFAULT_SWEEP:                                  # what the robustness study runs
        ...

Contract of every function here:

* Input: a radiograph as PIL (any mode, reduced to "L" by ``chexanatomy.inference.grey_image``) or an array
  [H, W]; masks ``{name: bool [H, W]}`` on the image's grid, indexed ``(y, x)`` = (row, column).
* Output: a PIL "L" image and bool masks of the *same* H x W, so that a model's answer on the perturbed image is
  scored against the perturbed reference at the original resolution. What leaves the frame is lost; what enters
  it is black (0) in the image and False in the masks.
* Interpolation: the image is bilinear; each mask is interpolated bilinearly as 0/1 and thresholded at 0.5, so a
  mask keeps the outline of an image region drawn from it (nearest neighbour would move mask edges by up to
  half a pixel against the image).
* Pixel geometry: pixel (y, x) covers [y, y+1) x [x, x+1), its centre is (y + 0.5, x + 0.5), and rotation,
  scaling, cropping and padding act about the image centre (H/2, W/2). Multiples of 90 degrees on a square
  image and whole-pixel shifts therefore move pixels onto pixels, with no blur.
* Signs: ``rotate`` positive degrees turn the content counter-clockwise *as displayed* (row 0 at the top), like
  PIL's ``Image.rotate`` and ``np.rot90``: +90 takes the top-left corner to the bottom-left. ``translate``:
  positive ``dy`` moves the content down, positive ``dx`` to the image's right (the patient's left on a PA
  view). ``scale`` > 1 enlarges the content about the centre (the periphery is lost), < 1 shrinks it onto a
  black canvas.
* ``crop(f)`` keeps the central (1 - 2f) of each side and resizes it back to H x W: the model sees a narrower
  field of view, magnified. It is not returned as a smaller image because both model kinds resize their input
  to one fixed size (so a smaller image at the original scale reaches the model magnified all the same), and
  because scores are computed on the original grid. Geometrically ``crop(f)`` equals ``scale(1 / (1 - 2f))``; it
  is kept as its own kind because it is read as field of view lost (crop 0.15 = zoom 1.43, beyond the scale
  sweep). Likewise ``pad(f)`` (a black border of f times the side on every side, resized back) equals
  ``scale(1 / (1 + 2f))``: the thorax fills less of the frame, as on a loosely collimated radiograph.

Written by hand on PIL's ``Image.transform`` (one affine map from output to input coordinates, in PIL's
``(x, y)`` order): the parametrisation (centre, signs, field of view) and the identical treatment of image and
masks are what this module is for; torchvision's transforms would add a dependency for the same four lines.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from chexanatomy.inference import grey_image

Masks = dict[str, np.ndarray]

# kind -> (unit of the magnitude, the magnitude that changes nothing)
KINDS: dict[str, tuple[str, float]] = {
    "rotate": ("degrees, counter-clockwise as displayed", 0.0),
    "scale": ("zoom factor about the centre", 1.0),
    "translate_x": ("fraction of the width, + = image right", 0.0),
    "translate_y": ("fraction of the height, + = down", 0.0),
    "crop": ("fraction of each side removed", 0.0),
    "pad": ("fraction of each side added as black border", 0.0),
}


def _check_masks(masks: Masks, shape: tuple[int, int]) -> Masks:
    """``masks`` as bool arrays, each of ``shape`` = (H, W); ValueError naming the first that is not."""
    out = {}
    for name, mask in masks.items():
        arr = np.asarray(mask).astype(bool, copy=False)
        if arr.shape != shape:
            raise ValueError(f"mask {name!r} has shape {arr.shape} but the image is {shape} (H, W); they must match")
        out[name] = arr
    return out


def _warp_mask(mask: np.ndarray, data: tuple[float, ...]) -> np.ndarray:
    """A bool [H, W] mask through PIL's affine ``data``: bilinear on 0/1, thresholded at 0.5."""
    soft = Image.fromarray(mask.astype(np.float32))  # mode "F"
    size = (mask.shape[1], mask.shape[0])
    warped = soft.transform(size, Image.Transform.AFFINE, data, resample=Image.Resampling.BILINEAR, fillcolor=0.0)
    return np.asarray(warped) >= 0.5


def warp(image: Image.Image | np.ndarray, masks: Masks, inverse: np.ndarray) -> tuple[Image.Image, Masks]:
    """Apply one affine map to an image and its masks, keeping H x W.

    Args:
        image: PIL (any mode) or array [H, W].
        masks: ``{name: bool [H, W]}`` on the image's grid.
        inverse: float [2, 3], the map from *output* to *input* continuous coordinates in ``(x, y)`` order
            (``x_in = a x + b y + c``, ``y_in = d x + e y + f``; pixel centres at integer + 0.5).

    Returns:
        The warped PIL "L" image and ``{name: bool [H, W]}`` (copies of the inputs when ``inverse`` is the
        identity).

    Raises:
        ValueError: when a mask's shape differs from the image's.
    """
    grey = grey_image(image)
    masks = _check_masks(masks, (grey.size[1], grey.size[0]))
    inverse = np.asarray(inverse, dtype=np.float64)
    if np.allclose(inverse, np.eye(2, 3)):
        return grey.copy(), {name: mask.copy() for name, mask in masks.items()}
    data = tuple(float(v) for v in inverse.ravel())
    out = grey.transform(grey.size, Image.Transform.AFFINE, data, resample=Image.Resampling.BILINEAR, fillcolor=0)
    return out, {name: _warp_mask(mask, data) for name, mask in masks.items()}


def _shape(image: Image.Image | np.ndarray) -> tuple[int, int]:
    """(H, W) of a PIL image or an array [H, W, ...]."""
    if isinstance(image, Image.Image):
        return image.size[1], image.size[0]
    return tuple(np.asarray(image).shape[:2])


def _about_centre(linear: np.ndarray, image: Image.Image | np.ndarray) -> np.ndarray:
    """The [2, 3] output-to-input map ``p_in = linear @ (p_out - c) + c`` about the centre c = (W/2, H/2)."""
    height, width = _shape(image)
    centre = np.array([width / 2.0, height / 2.0])
    return np.column_stack([linear, centre - linear @ centre])


def rotate(image: Image.Image | np.ndarray, masks: Masks, degrees: float) -> tuple[Image.Image, Masks]:
    """Rotate the content by ``degrees`` counter-clockwise as displayed, about the image centre.

    Returns:
        PIL "L" image and bool masks, same H x W; the corners that rotate in are black / False.
    """
    theta = np.deg2rad(degrees)
    cos, sin = round(float(np.cos(theta)), 12), round(float(np.sin(theta)), 12)  # exact at multiples of 90
    # With y pointing down, turning content counter-clockwise as displayed maps (x, y) -> (x cos + y sin,
    # -x sin + y cos) about the centre; PIL wants the inverse of that.
    linear = np.array([[cos, -sin], [sin, cos]])
    return warp(image, masks, _about_centre(linear, image))


def scale(image: Image.Image | np.ndarray, masks: Masks, factor: float) -> tuple[Image.Image, Masks]:
    """Zoom the content by ``factor`` about the image centre (> 1 enlarges and loses the periphery, < 1 shrinks).

    Raises:
        ValueError: when ``factor`` is not positive.
    """
    if not factor > 0:
        raise ValueError(f"scale factor must be positive, got {factor}")
    return warp(image, masks, _about_centre(np.eye(2) / factor, image))


def translate(image: Image.Image | np.ndarray, masks: Masks, dy_px: float, dx_px: float) -> tuple[Image.Image, Masks]:
    """Shift the content by ``dy_px`` rows (+ = down) and ``dx_px`` columns (+ = image right), in pixels."""
    return warp(image, masks, np.array([[1.0, 0.0, -dx_px], [0.0, 1.0, -dy_px]]))


def crop(image: Image.Image | np.ndarray, masks: Masks, fraction: float) -> tuple[Image.Image, Masks]:
    """Remove ``fraction`` of the side from every edge and resize the centre back to H x W.

    Equal to ``scale(1 / (1 - 2 * fraction))``; see the module docstring for why the output is not smaller.

    Raises:
        ValueError: unless 0 <= ``fraction`` < 0.5.
    """
    if not 0 <= fraction < 0.5:
        raise ValueError(f"crop fraction must be in [0, 0.5), got {fraction}")
    return warp(image, masks, _about_centre(np.eye(2) * (1 - 2 * fraction), image))


def pad(image: Image.Image | np.ndarray, masks: Masks, fraction: float) -> tuple[Image.Image, Masks]:
    """Add a black border of ``fraction`` of the side on every edge and resize the whole back to H x W.

    Equal to ``scale(1 / (1 + 2 * fraction))``.

    Raises:
        ValueError: when ``fraction`` is negative.
    """
    if fraction < 0:
        raise ValueError(f"pad fraction must be >= 0, got {fraction}")
    return warp(image, masks, _about_centre(np.eye(2) * (1 + 2 * fraction), image))


@dataclass(frozen=True)
class Perturbation:
    """One perturbation of a sweep.

    Attributes:
        kind: one of :data:`KINDS`: "rotate", "scale", "translate_x", "translate_y", "crop", "pad".
        magnitude: in the kind's unit (``KINDS[kind][0]``): degrees, zoom factor, or a fraction of the side.
    """

    kind: str
    magnitude: float

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"Perturbation.kind must be one of {sorted(KINDS)}, got {self.kind!r}")
        if self.kind == "scale" and not self.magnitude > 0:
            raise ValueError(f"Perturbation.magnitude for scale must be positive, got {self.magnitude}")
        if self.kind == "crop" and not 0 <= self.magnitude < 0.5:
            raise ValueError(f"Perturbation.magnitude for crop must be in [0, 0.5), got {self.magnitude}")
        if self.kind == "pad" and self.magnitude < 0:
            raise ValueError(f"Perturbation.magnitude for pad must be >= 0, got {self.magnitude}")

    @property
    def is_identity(self) -> bool:
        """True when this perturbation leaves image and masks unchanged."""
        return self.magnitude == KINDS[self.kind][1]

    @property
    def label(self) -> str:
        """Short text for tables and legends, e.g. "rotate +5" or "scale 0.85"."""
        return f"{self.kind} {self.magnitude:+g}" if KINDS[self.kind][1] == 0 else f"{self.kind} {self.magnitude:g}"

    def apply(self, image: Image.Image | np.ndarray, masks: Masks) -> tuple[Image.Image, Masks]:
        """The perturbed image (PIL "L") and masks (bool), both at the input's H x W."""
        if self.kind == "rotate":
            return rotate(image, masks, self.magnitude)
        if self.kind == "scale":
            return scale(image, masks, self.magnitude)
        if self.kind in ("translate_x", "translate_y"):
            height, width = _shape(image)
            if self.kind == "translate_x":
                return translate(image, masks, 0.0, self.magnitude * width)
            return translate(image, masks, self.magnitude * height, 0.0)
        if self.kind == "crop":
            return crop(image, masks, self.magnitude)
        return pad(image, masks, self.magnitude)


def _sweep(kind: str, magnitudes: tuple[float, ...]) -> tuple[Perturbation, ...]:
    return tuple(Perturbation(kind, m) for m in magnitudes)


# Translation is swept along each axis separately: a horizontal shift tests left/right confusion, a vertical one
# pushes the apices or the diaphragm out of the frame.
DEFAULT_SWEEP: tuple[Perturbation, ...] = (
    *_sweep("rotate", (-15, -10, -5, 0, 5, 10, 15)),
    *_sweep("scale", (0.7, 0.85, 1.0, 1.15, 1.3)),
    *_sweep("translate_x", (-0.1, -0.05, 0, 0.05, 0.1)),
    *_sweep("translate_y", (-0.1, -0.05, 0, 0.05, 0.1)),
    *_sweep("crop", (0, 0.05, 0.1, 0.15)),
    *_sweep("pad", (0, 0.1, 0.2, 0.3)),
)

__all__ = ["DEFAULT_SWEEP", "KINDS", "Perturbation", "crop", "pad", "rotate", "scale", "translate", "warp"]
