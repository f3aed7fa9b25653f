"""Segmentation scores for 2-D anatomy masks: Dice, IoU, HD95, box IoU and a per-structure summary.

Plain numpy/scipy. Dice, IoU and the tight box are ``chexanatomy.masks``'s (one rule for every part). These are
written by hand because no library gives this exact contract (an empty-mask rule for every score, HD95 reported
as *undefined* rather than 0 or inf, invalid answers counted per structure); the ``evaluate`` module in
``eval/metrics/anatomy_segmentation`` wraps :func:`score_structures` at the edge.

Conventions shared by every function here:

* A mask is a bool array ``[H, W]`` indexed ``(y, x)`` = (row, column); any other dtype is read as
  ``mask != 0``. Prediction and reference must have the same shape: score at the reference's resolution.
* Empty-mask rule: Dice, IoU and box IoU are 1.0 when prediction and reference are both empty and 0.0 when
  exactly one is empty. HD95 is ``None`` (undefined) when either mask is empty; summaries count those cases
  (``hd95_undefined``) instead of folding them into the mean.
* A box is ``(y0, x0, y1, x1)`` in pixels, ``y0``/``x0`` inclusive and ``y1``/``x1`` exclusive.
* Spacing is ``(row_mm, col_mm)``, the pixel size along y and along x.
* Laterality lives in the structure name only (``lung_left`` is the patient's left lung, on the image's
  right in a PA view); nothing here flips or re-labels masks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from scipy import ndimage

from chexanatomy.masks import Box, dice, iou, tight_box

Spacing = tuple[float, float]

SUMMARY_KEYS = ("dice", "iou", "hd95_px", "hd95_mm", "box_iou")


def _as_mask(x: Any, what: str = "mask") -> np.ndarray:
    """``x`` as a bool [H, W] array (nonzero = inside); ``what`` names it in the error."""
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise ValueError(f"{what} must be a 2-D [H, W] mask, got shape {arr.shape}")
    return arr.astype(bool, copy=False)


def _as_pair(pred: Any, ref: Any) -> tuple[np.ndarray, np.ndarray]:
    pred, ref = _as_mask(pred, "prediction"), _as_mask(ref, "reference")
    if pred.shape != ref.shape:
        raise ValueError(
            f"prediction shape {pred.shape} != reference shape {ref.shape}; resize the prediction to the "
            "reference grid before scoring"
        )
    return pred, ref


def _as_spacing(spacing_mm: Any) -> Spacing:
    row, col = (float(v) for v in spacing_mm)
    if not (row > 0 and col > 0):
        raise ValueError(f"spacing_mm must be two positive numbers (row_mm, col_mm), got {spacing_mm!r}")
    return row, col


def boundary(mask: Any) -> np.ndarray:
    """The boundary pixels of a bool [H, W] mask: inside pixels with a 4-neighbour outside (or off the image).

    Returns:
        bool [H, W], a subset of ``mask``.
    """
    mask = _as_mask(mask)
    eroded = ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(2, 1), border_value=0)
    return mask & ~eroded


def _directed_hd95(src: np.ndarray, dst: np.ndarray, spacing: Spacing) -> float:
    """95th percentile over ``src`` boundary pixels of the distance to the nearest ``dst`` boundary pixel."""
    distance_to_dst = ndimage.distance_transform_edt(~dst, sampling=spacing)
    return float(np.percentile(distance_to_dst[src], 95))


def _crop_to_union(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both masks cropped to their union's box plus a 1-pixel False border.

    Boundaries and distances are unchanged; the distance transforms run on the box instead of the whole image.
    """
    y0, x0, y1, x1 = tight_box(a | b)
    return (np.pad(m[y0:y1, x0:x1], 1) for m in (a, b))


def hd95(pred: Any, ref: Any, spacing_mm: Spacing | None = None) -> float | None:
    """Symmetric 95th-percentile Hausdorff distance between the boundaries of two bool [H, W] masks.

    For each boundary pixel of one mask (see :func:`boundary`), take the Euclidean distance between pixel
    centres to the nearest boundary pixel of the other; HD95 is the larger of the two directed 95th
    percentiles (numpy's default linear interpolation), as in MONAI's ``compute_hausdorff_distance``.
    (MedPy's ``hd95`` instead pools both directions before taking one percentile; the two agree when the
    boundaries are symmetric and differ slightly otherwise.)

    Args:
        pred: predicted mask, bool [H, W].
        ref: reference mask, bool [H, W], same shape.
        spacing_mm: pixel size ``(row_mm, col_mm)``; ``None`` measures in pixels.

    Returns:
        The distance in pixels (``spacing_mm=None``) or millimetres, or ``None`` when either mask is empty:
        the distance is undefined there, and callers report it as a count, never as 0 or infinity.
    """
    pred, ref = _as_pair(pred, ref)
    if not pred.any() or not ref.any():
        return None
    spacing = (1.0, 1.0) if spacing_mm is None else _as_spacing(spacing_mm)
    pred, ref = _crop_to_union(pred, ref)
    pred_edge, ref_edge = boundary(pred), boundary(ref)
    return max(_directed_hd95(pred_edge, ref_edge, spacing), _directed_hd95(ref_edge, pred_edge, spacing))


def _box_area(box: Box) -> int:
    y0, x0, y1, x1 = box
    return max(0, y1 - y0) * max(0, x1 - x0)


def box_iou(a: Box | None, b: Box | None) -> float:
    """IoU of two pixel boxes ``(y0, x0, y1, x1)`` (y0/x0 inclusive, y1/x1 exclusive).

    Returns:
        A float in [0, 1]; 1.0 when both boxes are ``None`` (both masks empty), 0.0 when exactly one is.
        Two zero-area boxes score 1.0 if equal, else 0.0.
    """
    if a is None or b is None:
        return 1.0 if a is None and b is None else 0.0
    a, b = tuple(int(v) for v in a), tuple(int(v) for v in b)
    inter = _box_area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))
    union = _box_area(a) + _box_area(b) - inter
    if union == 0:
        return 1.0 if a == b else 0.0
    return inter / union


def _score_record(index: int, record: Mapping[str, Any], spacing_mm: Spacing | None) -> dict[str, Any]:
    """All scores of one answer, plus the pixel counts the pooled (micro) scores need."""
    name = record["name"]
    ref = _as_mask(record["ref"], f"record {index} ({name!r}) ref")
    pred = record.get("pred")
    invalid = not record.get("valid", True) or pred is None
    pred = np.zeros_like(ref) if invalid else _as_mask(pred, f"record {index} ({name!r}) pred")
    if pred.shape != ref.shape:
        raise ValueError(f"record {index} ({name!r}): pred shape {pred.shape} != ref shape {ref.shape}")
    if invalid:
        pred_box = None
    else:
        pred_box = record["pred_box"] if "pred_box" in record else tight_box(pred)
    spacing = record.get("spacing_mm", spacing_mm)
    inter = int(np.logical_and(pred, ref).sum())
    return {
        "dice": dice(pred, ref),
        "iou": iou(pred, ref),
        "hd95_px": hd95(pred, ref),
        "hd95_mm": None if spacing is None else hd95(pred, ref, spacing),
        "box_iou": box_iou(pred_box, tight_box(ref)),
        "invalid": invalid,
        "inter": inter,
        "union": int(pred.sum()) + int(ref.sum()) - inter,
        "pred_sum": int(pred.sum()),
        "ref_sum": int(ref.sum()),
    }


def _mean(values: Iterable[float | None]) -> float | None:
    """Mean of the values that are not ``None``; ``None`` if there are none."""
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def _summarise_structure(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out = {key: _mean(r[key] for r in rows) for key in SUMMARY_KEYS}
    out["count"] = len(rows)
    out["invalid_rate"] = sum(r["invalid"] for r in rows) / len(rows)
    out["hd95_undefined"] = sum(r["hd95_px"] is None for r in rows)
    return out


def _micro(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    if not rows:
        return {"dice": None, "iou": None}
    inter = sum(r["inter"] for r in rows)
    total = sum(r["pred_sum"] + r["ref_sum"] for r in rows)
    union = sum(r["union"] for r in rows)
    return {"dice": 2.0 * inter / total if total else 1.0, "iou": inter / union if union else 1.0}


def score_structures(records: Iterable[Mapping[str, Any]], spacing_mm: Spacing | None = None) -> dict[str, Any]:
    """Score a set of answers, per structure and overall.

    Args:
        records: one mapping per answer, with keys

            * ``name`` (str): structure name, e.g. ``"lung_left"`` (patient side).
            * ``ref`` (bool [H, W]): reference mask.
            * ``pred`` (bool [H, W] or ``None``): predicted mask on the same grid; ``None`` = no usable mask.
            * ``valid`` (bool, default True): False when the model's answer could not be decoded.
            * ``pred_box`` (optional ``(y0, x0, y1, x1)`` or ``None``): the predicted box, when the model
              answered one; without the key, the box around ``pred`` is used.
            * ``spacing_mm`` (optional ``(row_mm, col_mm)``): this record's pixel size, overriding the
              argument (real datasets differ in pixel size).

            An invalid answer (``valid`` False or ``pred`` None) is scored as an empty prediction with no box,
            and counted in its structure's ``invalid_rate``.
        spacing_mm: default pixel size ``(row_mm, col_mm)`` for ``hd95_mm``; ``None`` leaves it ``None``.

    Returns:
        A JSON-serialisable dict (plain floats, ints and ``None``)::

            {"per_structure": {name: {"dice", "iou", "hd95_px", "hd95_mm", "box_iou", "count",
                                      "invalid_rate", "hd95_undefined"}},
             "macro": {"dice", "iou", "hd95_px", "hd95_mm", "box_iou", "invalid_rate"},
             "micro": {"dice", "iou"},
             "count": int, "invalid_rate": float}

        Per-structure scores are means over that structure's records; the HD95 means use only records where
        HD95 is defined (``None`` if none is) and ``hd95_undefined`` counts the others. ``macro`` is the mean
        over structures, each weighing the same; ``micro`` pools intersections and pixel sums over all
        records, so large structures dominate it. Structures appear in order of first appearance. With no
        records every score is ``None`` and ``count`` is 0.
    """
    by_name: dict[str, list[dict[str, Any]]] = {}
    for i, record in enumerate(records):
        by_name.setdefault(record["name"], []).append(_score_record(i, record, spacing_mm))
    per_structure = {name: _summarise_structure(rows) for name, rows in by_name.items()}
    all_rows = [r for rows in by_name.values() for r in rows]
    macro = {key: _mean(s[key] for s in per_structure.values()) for key in (*SUMMARY_KEYS, "invalid_rate")}
    return {
        "per_structure": per_structure,
        "macro": macro,
        "micro": _micro(all_rows),
        "count": len(all_rows),
        "invalid_rate": sum(r["invalid"] for r in all_rows) / len(all_rows) if all_rows else None,
    }


__all__ = ["box_iou", "boundary", "hd95", "score_structures"]
