"""Score a ``Segmenter`` on real radiographs read by ``eval.real_cxr`` (JSRT/SCR, Montgomery, Shenzhen, CheXmask).

    python -m eval --unet bundled-unet --vlm none --montgomery /data/MontgomerySet --real_max_images 50

Those datasets draw the radiographic lung field (SCR definition, ``real_cxr.LUNG_DEFINITION``), while a lung
projected from CT is the whole lung. ``lung_definition`` says how a model's lungs are compared
(``real_cxr.LUNG_DEFINITIONS``), and every evaluation entry records which one it used:

* ``scr`` (default): the model's ``lung_field_left``/``lung_field_right`` when it was trained on them (corpus 2.0);
  otherwise its lung minus every occluder it predicts (heart, mediastinum, aorta, upper abdomen).
* ``heart``: lung minus the predicted heart (the definition of earlier releases).
* ``full``: the predicted lung as it is.

Both lungs as one reference mask (``lungs``) are scored against the union of the two sides. With
``keep_largest`` the predicted lung of each side keeps only its largest connected component (a lung field is one
region; small islands elsewhere are errors).
"""

from __future__ import annotations

import time

import numpy as np
from tqdm.auto import tqdm

from chexanatomy.anatomy import LUNG_FIELD_OCCLUDERS, LUNGS
from chexanatomy.inference import Segmenter
from chexanatomy.regions import largest_component

from .box_statistics import box_statistics
from .real_cxr import LUNG_DEFINITIONS, radiographic_lung_field
from .scores import score_structures

SIDES = {**{side: (side,) for side in LUNGS}, "lungs": LUNGS}
FIELD_OF = {"lung_left": "lung_field_left", "lung_right": "lung_field_right"}
OCCLUDERS_OF = {"scr": LUNG_FIELD_OCCLUDERS, "heart": ("heart",), "full": ()}  # when the model has no lung field


def _requests(known: list[str], names: list[str], definition: str) -> list[str]:
    """What to ask the model for: the reference's structures, with each lung replaced by what the definition needs."""
    ask = [n for n in names if n not in SIDES and n in known]
    for name in (n for n in names if n in SIDES):
        for side in SIDES[name]:
            if definition == "scr" and FIELD_OF[side] in known:
                ask.append(FIELD_OF[side])
            elif side in known:
                ask.append(side)
                ask += [o for o in OCCLUDERS_OF[definition] if o in known]
    return list(dict.fromkeys(ask))


def _side_mask(predictions: dict, side: str, definition: str, keep_largest: bool) -> tuple[np.ndarray, bool] | None:
    """``(mask, valid)`` of one predicted lung under ``definition``, or None when the model has no such lung."""
    if definition == "scr" and FIELD_OF[side] in predictions:
        p = predictions[FIELD_OF[side]]
        mask, valid = p.mask, p.valid
    elif side in predictions:
        occluders = [predictions[o].mask for o in OCCLUDERS_OF[definition] if o in predictions]
        mask = radiographic_lung_field(predictions[side].mask, occluders)
        valid = predictions[side].valid
    else:
        return None
    return (largest_component(mask) if keep_largest else mask), valid


def predicted_masks(
    segmenter: Segmenter, image, names: list[str], lung_definition: str = "scr", keep_largest: bool = True
) -> dict[str, tuple]:
    """``{name: (mask bool [H, W], valid)}`` for the reference's names the model can answer, lungs per the definition.

    Args:
        segmenter: any ``chexanatomy.inference`` segmenter.
        image: the radiograph (PIL or array), frontal, radiological convention.
        names: the reference's structure names (``lung_left``, ``lung_right``, ``lungs``, ``heart``, ...).
        lung_definition: one of ``real_cxr.LUNG_DEFINITIONS``.
        keep_largest: keep only each predicted lung's largest connected component.
    """
    return _predict(segmenter, image, names, lung_definition, keep_largest)[0]


def _predict(segmenter: Segmenter, image, names: list[str], lung_definition: str, keep_largest: bool):
    """``predicted_masks``' result, and the model's own predictions it was built from (``{name: Prediction}``)."""
    if lung_definition not in LUNG_DEFINITIONS:
        raise ValueError(f"lung_definition must be one of {tuple(LUNG_DEFINITIONS)}, got {lung_definition!r}")
    ask = _requests(list(segmenter.structures), names, lung_definition)
    predictions = segmenter.segment(image, ask) if ask else {}
    out = {}
    for name in names:
        if name in SIDES:
            sides = [_side_mask(predictions, s, lung_definition, keep_largest) for s in SIDES[name]]
            if all(sides):
                out[name] = (np.logical_or.reduce([m for m, _ in sides]), all(v for _, v in sides))
        elif name in predictions:
            out[name] = (predictions[name].mask, predictions[name].valid)
    return out, predictions


def evaluate_on_real(
    segmenter: Segmenter, records, model_id: str, dataset: dict, lung_definition: str = "scr", keep_largest: bool = True
) -> dict:
    """One results-JSON evaluation entry for real radiograph records (``{"id", "image", "masks", "spacing_mm"}``).

    The entry's ``dataset`` records ``lung_definition`` and ``keep_largest`` (see the module docstring). Its
    ``summary`` adds ``eval.box_statistics``' x0 == y0 rates: of every answer the model gave (the lung fields, or
    the lungs and occluders it was asked for), and of the reference masks scored. Box IoU compares the tight boxes
    of the scored (post-processed) masks.
    """
    scored, seconds, images, answers = [], [], 0, []
    for record in tqdm(records, desc=f"{model_id} on {dataset.get('name', 'real')}", unit="image"):
        start = time.perf_counter()
        predicted, raw = _predict(segmenter, record["image"], list(record["masks"]), lung_definition, keep_largest)
        seconds.append(time.perf_counter() - start)
        answers += [p.answer for p in raw.values()]
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
    summary.update(box_statistics(answers, (r["ref"] for r in scored)))
    return {
        "model": model_id,
        "dataset": {
            **dataset,
            "images": images,
            "synthetic": False,
            "lung_definition": lung_definition,
            "keep_largest": keep_largest,
        },
        "summary": summary,
        "per_structure": scores["per_structure"],
        "seconds_per_image": float(np.mean(seconds)) if seconds else None,
    }
