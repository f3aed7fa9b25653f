"""Score a ``Segmenter`` on real radiographs read by ``eval.real_cxr`` (JSRT/SCR, Montgomery, Shenzhen, CheXmask).

    python -m eval --unet bundled-unet --vlm none --montgomery /data/MontgomerySet --real_max_images 50

Those datasets draw the *visible* lung field (the heart-overlapped part excluded), while our projected masks hold
the whole lung. With ``lung_definition="visible"`` (the default, matching ``real_cxr.LUNG_DEFINITION``) each
predicted lung becomes lung minus the predicted heart before scoring; the evaluation entry says which was used.
"""

from __future__ import annotations

import time

import numpy as np
from tqdm.auto import tqdm

from chexanatomy.inference import Segmenter

from .real_cxr import visible_lung_field
from .scores import score_structures

LUNG_NAMES = ("lung_left", "lung_right", "lungs")


def predicted_masks(segmenter: Segmenter, image, names: list[str], lung_definition: str) -> dict[str, tuple]:
    """``{name: (mask bool [H, W], valid)}`` for the reference's names the model knows, lungs per the definition."""
    known = [n for n in names if n in segmenter.structures]
    visible = lung_definition == "visible" and any(n in LUNG_NAMES for n in known)
    ask = list(dict.fromkeys([*known, *(["heart"] if visible and "heart" in segmenter.structures else [])]))
    predictions = segmenter.segment(image, ask) if ask else {}
    out = {}
    for name in known:
        p = predictions[name]
        mask = p.mask
        if visible and name in LUNG_NAMES and "heart" in predictions:
            mask = visible_lung_field(mask, predictions["heart"].mask)
        out[name] = (mask, p.valid)
    return out


def evaluate_on_real(
    segmenter: Segmenter, records, model_id: str, dataset: dict, lung_definition: str = "visible"
) -> dict:
    """One results-JSON evaluation entry for real radiograph records (``{"id", "image", "masks", "spacing_mm"}``)."""
    scored, seconds, images = [], [], 0
    for record in tqdm(records, desc=f"{model_id} on {dataset.get('name', 'real')}", unit="image"):
        start = time.perf_counter()
        predicted = predicted_masks(segmenter, record["image"], list(record["masks"]), lung_definition)
        seconds.append(time.perf_counter() - start)
        images += 1
        for name, (mask, valid) in predicted.items():
            scored.append(
                {
                    "name": name,
                    "ref": record["masks"][name],
                    "pred": mask,
                    "valid": valid,
                    **({"spacing_mm": record["spacing_mm"]} if record.get("spacing_mm") else {}),
                }
            )
    scores = score_structures(scored)
    summary = {key: scores[key] for key in ("macro", "micro", "count", "invalid_rate")}
    summary["structures"] = len(scores["per_structure"])
    return {
        "model": model_id,
        "dataset": {**dataset, "images": images, "synthetic": False, "lung_definition": lung_definition},
        "summary": summary,
        "per_structure": scores["per_structure"],
        "seconds_per_image": float(np.mean(seconds)) if seconds else None,
    }
