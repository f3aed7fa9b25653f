"""Score any ``Segmenter`` (VLM or U-Net) on a split of a DRR corpus, per structure, at the original resolution.

    from eval.corpus_eval import evaluate_on_corpus
    evaluation, gallery = evaluate_on_corpus(load_segmenter("bundled-unet"), rows, model_id="unet")

Every structure of a row that the model knows is requested in one ``segment`` call per image (the VLM answers all
of them in one batch that encodes the image once). HD95 in mm uses the pixel size at the isocentre plane
(detector pixel x source-to-object / source-to-detector distance), the plane where the anatomy is.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from chexanatomy.inference import Segmenter

from .box_statistics import box_statistics
from .scores import score_structures

LARGE_AREA_FRACTION = 0.01  # the goals' "structures with at least 1 % image area" (mean over the split)


@dataclass
class GalleryItem:
    """One image with its truth and predictions, for the overlay gallery (masks bool [H, W])."""

    image: object
    view: str
    truth: dict[str, np.ndarray] = field(repr=False)
    predicted: dict[str, np.ndarray] = field(repr=False)


def isocentre_spacing_mm(row: dict) -> tuple[float, float] | None:
    """(row_mm, col_mm) pixel size at the isocentre plane, or None when the row carries no geometry."""
    geometry = row.get("geometry") or {}
    if not geometry.get("pixel_mm") or not geometry.get("sid_mm") or not geometry.get("sod_mm"):
        return None
    size = geometry["pixel_mm"] * geometry["sod_mm"] / geometry["sid_mm"]
    return (float(size), float(size))


def row_truth(row: dict, known: list[str]) -> dict[str, np.ndarray]:
    """Ground-truth masks bool [H, W] of the row's structures that the model knows."""
    return {s["name"]: np.asarray(s["mask"], dtype=bool) for s in row["structures"] if s["name"] in known}


def large_structures(rows, fraction: float = LARGE_AREA_FRACTION) -> set[str]:
    """Structures whose mean area over the rows (where present) is at least ``fraction`` of the image."""
    areas: dict[str, list[float]] = {}
    for row in rows:
        w, h = row["image"].size
        for s in row["structures"]:
            areas.setdefault(s["name"], []).append(s["area_px"] / (w * h))
    return {name for name, v in areas.items() if float(np.mean(v)) >= fraction}


def evaluate_on_corpus(
    segmenter: Segmenter, rows, model_id: str, dataset: dict | None = None, gallery_size: int = 3
) -> tuple[dict, list[GalleryItem]]:
    """One evaluation entry of the results JSON, and the first ``gallery_size`` images for the gallery.

    Returns:
        ``{"model", "dataset", "summary", "per_structure", "seconds_per_image"}`` where ``summary`` is
        ``score_structures``' macro/micro/count/invalid_rate plus ``structures``, ``macro_dice_ge_1pct`` (over
        the ``structures_ge_1pct`` it names) and ``eval.box_statistics``' x0 == y0 rates of answers and references.
    """
    records, gallery, seconds, answers = [], [], [], []
    for row in tqdm(rows, desc=f"{model_id} on {len(rows)} images", unit="image"):
        truth = row_truth(row, segmenter.structures)
        if not truth:
            continue
        start = time.perf_counter()
        predicted = segmenter.segment(row["image"], list(truth))
        seconds.append(time.perf_counter() - start)
        answers += [p.answer for p in predicted.values()]
        spacing = isocentre_spacing_mm(row)
        for name, mask in truth.items():
            p = predicted[name]
            records.append(
                {
                    "name": name,
                    "ref": mask,
                    "pred": p.mask,
                    "valid": p.valid,
                    "pred_box": p.box,
                    **({"spacing_mm": spacing} if spacing else {}),
                }
            )
        if len(gallery) < gallery_size:
            gallery.append(
                GalleryItem(row["image"], row.get("view", ""), truth, {n: p.mask for n, p in predicted.items()})
            )
    scores = score_structures(records)
    large = large_structures(rows)
    large_dice = [s["dice"] for n, s in scores["per_structure"].items() if n in large]
    summary = {key: scores[key] for key in ("macro", "micro", "count", "invalid_rate")}
    summary["structures"] = len(scores["per_structure"])
    summary["macro_dice_ge_1pct"] = float(np.mean(large_dice)) if large_dice else None
    summary["structures_ge_1pct"] = sorted(n for n in scores["per_structure"] if n in large)
    summary.update(box_statistics(answers, (r["ref"] for r in records)))
    evaluation = {
        "model": model_id,
        "dataset": dataset or {},
        "summary": summary,
        "per_structure": scores["per_structure"],
        "seconds_per_image": float(np.mean(seconds)) if seconds else None,
    }
    return evaluation, gallery
