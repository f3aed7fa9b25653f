"""Volume-side realism for radiograph-like rendering: virtual non-contrast, and a body beyond the CT's coverage.

Both act on the HU volume before projection and never on the label map's content, so projected masks stay exactly
the masks of the CT's labels.

* **Virtual non-contrast.** Chest CTs are often contrast-enhanced: the heart and great vessels glow (the embedded
  CT's aorta has a median of ~400 HU) where a plain radiograph shows soft tissue. A CT counts as enhanced when the
  median HU of its blood-pool labels exceeds ``ENHANCED_BLOOD_HU``, decided from the label map, never guessed from
  intensities alone. Blood-pool voxels above ``BLOOD_HU`` are then set to ``BLOOD_HU`` (unenhanced blood, ~40 HU).
* **A body beyond the CT.** A CT stops a few centimetres above the lung apices and below the domes, and its
  reconstruction field may cut the arms; rendered as is, the image shows the CT's box: black above the first
  slice and straight edges where the body is cut. A radiograph shows the neck, shoulders and abdomen continuing.
  :func:`extend_body` adds slices above and below (and columns where the body touches the lateral field edge)
  that continue the boundary slice's body: the slice itself fades over ``FADE_MM`` into its smoothed soft-tissue
  version (clipped to [-100, 100] HU, blurred in-plane, the airway kept as air), so cut bones end softly instead
  of streaking and no texture edge marks the CT's end. Above, the body narrows from the shoulders to a neck along
  an ellipse; beside, a cut arm closes in a rounded end. The added voxels have label 0.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

BLOOD_POOL = (
    "heart",
    "atrial_appendage_left",
    "aorta",
    "pulmonary_artery",
    "pulmonary_vein",
    "superior_vena_cava",
    "inferior_vena_cava",
    "brachiocephalic_trunk",
    "brachiocephalic_vein_left",
    "brachiocephalic_vein_right",
    "subclavian_artery_left",
    "subclavian_artery_right",
    "common_carotid_artery_left",
    "common_carotid_artery_right",
    "portal_vein_and_splenic_vein",
)
ENHANCED_BLOOD_HU = 120.0  # unenhanced blood is 30-60 HU; arterial or venous phase is 150-400
BLOOD_HU = 40.0
SUPERIOR_MM = 120.0  # neck above the CT's first slice
INFERIOR_MM = 220.0  # abdomen below its last slice
FADE_MM = 20.0  # the boundary slice's own texture and bone fade into the smoothed continuation over this length
SMOOTH_MM = 6.0  # in-plane smoothing of the continuation (a repeated slice must not streak)
SHOULDER_TAPER_MM = 45.0  # the shoulders round off into the neck over this height
NECK_HALF_WIDTH_MM = 60.0
LATERAL_MM = 60.0  # a cut arm closes over this width


def blood_pool_ids(id_to_structure: dict[int, str]) -> list[int]:
    """Label ids of the blood-pool structures (``BLOOD_POOL``) in an id -> structure map."""
    return [i for i, name in id_to_structure.items() if name in BLOOD_POOL]


def virtual_non_contrast(
    hu: np.ndarray, labels: np.ndarray, id_to_structure: dict[int, str]
) -> tuple[np.ndarray, bool]:
    """``(hu, enhanced)``: blood pool clipped to ``BLOOD_HU`` when the label map shows an enhanced CT.

    Args:
        hu: float32 [I, J, K] Hounsfield units.
        labels: integer [I, J, K] label map on the same grid.
        id_to_structure: label id -> structure name (``chexanatomy.anatomy`` names).

    Returns:
        The (copied if changed) HU volume and whether the CT was judged enhanced (median blood-pool HU above
        ``ENHANCED_BLOOD_HU``). A CT without blood-pool labels is returned unchanged, ``enhanced=False``.
    """
    ids = blood_pool_ids(id_to_structure)
    pool = np.isin(labels, ids) if ids else None
    if pool is None or not pool.any() or float(np.median(hu[pool])) <= ENHANCED_BLOOD_HU:
        return hu, False
    out = hu.copy()
    bright = pool & (out > BLOOD_HU)
    out[bright] = BLOOD_HU
    return out, True


def _axes(affine: np.ndarray) -> tuple[int, int, int]:
    """Voxel axes most aligned with world x (lateral), y (anterior) and z (superior)."""
    order = [int(np.argmax(np.abs(affine[r, :3]))) for r in range(3)]
    if len(set(order)) != 3:
        raise ValueError("the CT's voxel axes are too oblique to tell lateral, anterior and superior apart")
    return order[0], order[1], order[2]


def _continued(plane_hu: np.ndarray, plane_labels: np.ndarray, airway_ids: np.ndarray, spacing_mm) -> tuple:
    """``(fade(d_mm) -> plane, body)``: a boundary plane continued ``d_mm`` away from the CT.

    At ``d_mm = 0`` the plane itself; beyond, its smoothed soft tissue (airway kept as air) takes over with weight
    ``1 - exp(-d / FADE_MM)``; outside the body, air.
    """
    body = ndimage.binary_fill_holes(plane_hu > -500)
    soft = np.clip(plane_hu, -100.0, 100.0)
    airway = np.isin(plane_labels, airway_ids)
    soft[airway] = plane_hu[airway]
    soft = ndimage.gaussian_filter(np.where(body, soft, 0.0), SMOOTH_MM / np.asarray(spacing_mm))
    weight = ndimage.gaussian_filter(body.astype(np.float32), SMOOTH_MM / np.asarray(spacing_mm))
    soft = np.where(body, soft / np.maximum(weight, 1e-3), -1000.0)
    raw = np.where(body, plane_hu, -1000.0)

    def fade(d_mm: float) -> np.ndarray:
        w = float(np.exp(-d_mm / FADE_MM))
        return (w * raw + (1 - w) * soft).astype(np.float32)

    return fade, body


def _span(mask_1d: np.ndarray) -> tuple[float, float] | None:
    idx = np.flatnonzero(mask_1d)
    return (float(idx[0]), float(idx[-1])) if len(idx) else None


def extend_body(
    hu: np.ndarray, labels: np.ndarray, affine: np.ndarray, id_to_structure: dict[int, str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pad the CT with a body that continues beyond its coverage (module docstring); returns ``(hu, labels, affine)``.

    The new voxels keep the grid's spacing; the affine is shifted so that every original voxel keeps its world
    position. Lateral padding is added only on a side where the body touches the field edge.
    """
    lat, _, sup = _axes(affine)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    airway = np.array([i for i, n in id_to_structure.items() if n == "trachea"], dtype=np.int64)
    superior_first = affine[2, sup] < 0  # index 0 is the most superior slice
    hu, labels = np.moveaxis(hu, sup, -1), np.moveaxis(labels, sup, -1)  # work with slices along the last axis
    lat_axis = lat if lat < sup else lat - 1  # the lateral axis within a slice [A, B]
    n_sup, n_inf = int(round(SUPERIOR_MM / spacing[sup])), int(round(INFERIOR_MM / spacing[sup]))
    top, bottom = (0, -1) if superior_first else (-1, 0)
    in_plane = [spacing[a] for a in range(3) if a != sup]
    top_fade, top_body = _continued(hu[..., top], labels[..., top], airway, in_plane)
    bottom_fade, _ = _continued(hu[..., bottom], labels[..., bottom], airway, in_plane)
    step = spacing[sup]
    neck = [_narrowed(top_fade((d + 1) * step), top_body, lat_axis, spacing[lat], (d + 1) * step) for d in range(n_sup)]
    above = np.stack(neck[::-1] if superior_first else neck, axis=-1)  # the nearest slice lies next to the CT
    belly = [bottom_fade((d + 1) * step) for d in range(n_inf)]
    below = np.stack(belly if superior_first else belly[::-1], axis=-1)
    if superior_first:
        hu = np.concatenate([above, hu, below], axis=-1)
        shift = n_sup
    else:
        hu = np.concatenate([below, hu, above], axis=-1)
        shift = n_inf
    pad = [(0, 0), (0, 0), (shift, hu.shape[-1] - shift - labels.shape[-1])]
    labels = np.pad(labels, pad)
    hu, labels, lateral_shift = _extend_arms(hu, labels, lat_axis, spacing[lat])
    hu, labels = np.moveaxis(hu, -1, sup), np.moveaxis(labels, -1, sup)
    offset = np.zeros(3)
    offset[sup], offset[lat] = shift, lateral_shift
    out = affine.copy()
    out[:3, 3] = affine[:3, 3] - affine[:3, :3] @ offset
    return np.ascontiguousarray(hu, dtype=np.float32), np.ascontiguousarray(labels), out


def _narrowed(plane: np.ndarray, body: np.ndarray, lat_axis: int, lat_mm: float, d_mm: float) -> np.ndarray:
    """The boundary plane ``d_mm`` above the CT: the body narrowed from its full width to a neck (ellipse)."""
    across = body.any(axis=1 - lat_axis)
    span = _span(across)
    if span is None:
        return plane.copy()
    centre, half = (span[0] + span[1]) / 2, (span[1] - span[0]) / 2 * lat_mm
    neck = min(NECK_HALF_WIDTH_MM, half)
    t = min(1.0, d_mm / SHOULDER_TAPER_MM)
    allowed = neck + (half - neck) * np.sqrt(max(0.0, 1.0 - t * t))
    coord = (np.arange(plane.shape[lat_axis]) - centre) * lat_mm
    keep = np.abs(coord) <= allowed
    out = plane.copy()
    index = [slice(None), slice(None)]
    index[lat_axis] = ~keep
    out[tuple(index)] = -1000.0
    return out


def _extend_arms(hu: np.ndarray, labels: np.ndarray, lat_axis: int, lat_mm: float):
    """Pad the lateral axis where the body touches the field edge; the cut body closes in a rounded end."""
    n = int(round(LATERAL_MM / lat_mm))
    shift = 0
    for side in (0, -1):
        edge = np.take(hu, side, axis=lat_axis)  # [other in-plane axis, slices]
        if not (edge > -500).any():
            continue
        columns = []
        for d in range(1, n + 1):
            t = d / n
            col = edge.copy()
            body = col > -500
            col = np.where(body, np.clip(col, -100.0, 100.0), -1000.0)
            for k in range(col.shape[1]):  # each slice's cut shrinks towards its centre along an ellipse
                span = _span(body[:, k])
                if span is None:
                    continue
                centre, half = (span[0] + span[1]) / 2, (span[1] - span[0]) / 2
                allowed = half * np.sqrt(max(0.0, 1.0 - t * t))
                rows = np.abs(np.arange(col.shape[0]) - centre) > allowed
                col[rows, k] = -1000.0
            columns.append(col)
        block = np.stack(columns, axis=lat_axis)  # nearest column first
        zeros = np.zeros(block.shape, labels.dtype)
        if side == 0:
            hu = np.concatenate([np.flip(block, axis=lat_axis), hu], axis=lat_axis)
            labels = np.concatenate([zeros, labels], axis=lat_axis)
            shift = n
        else:
            hu = np.concatenate([hu, block], axis=lat_axis)
            labels = np.concatenate([labels, zeros], axis=lat_axis)
    return hu, labels, shift
