"""Plausibility on real radiographs without reference masks: what a user checks first on a real image.

    python -m eval --studies plausibility                     # the two bundled real radiographs (NIH ChestX-ray14)
    python -m eval --studies plausibility --real_dir /data/cxr  # any folder of frontal radiographs

No Dice without references; instead, per image and model, the checks that any radiologist's lung outline passes:

* each lung (the radiographic lung field when the model has it, else the lung) is one main region
  (``MAIN_COMPONENT_SHARE`` of its pixels in its largest connected component);
* each covers ``LUNG_AREA`` (10-35 %) of the image;
* the patient's left lung lies on the image right (radiological convention), the right lung on the image left;
* the heart's centroid lies between the two lungs' centroids;
* every answer for the lungs and the heart is valid (the VLM's token contract).

``tests/test_real_plausibility.py`` asserts these for the bundled models on the bundled images; the study puts the
same figures into ``results.json``, the report and the model cards.
"""

from __future__ import annotations

import warnings

import numpy as np
from PIL import Image

from chexanatomy.cli import one_line
from chexanatomy.inference import Segmenter
from chexanatomy.regions import largest_component

MAIN_COMPONENT_SHARE = 0.9
LUNG_AREA = (0.10, 0.35)


def main_component_share(mask: np.ndarray) -> float:
    """Share of the mask's pixels in its largest 8-connected component (1.0 = one region; 0.0 when empty)."""
    total = int(np.count_nonzero(mask))
    return float(largest_component(mask).sum() / total) if total else 0.0


def _centroid_x(mask: np.ndarray) -> float | None:
    cols = np.nonzero(mask)[1]
    return float(cols.mean()) if len(cols) else None


def lung_names(segmenter: Segmenter) -> tuple[str, str]:
    """(left, right) names to ask: the radiographic lung fields when the model has them, else the lungs."""
    if {"lung_field_left", "lung_field_right"} <= set(segmenter.structures):
        return "lung_field_left", "lung_field_right"
    return "lung_left", "lung_right"


def check_image(segmenter: Segmenter, image: Image.Image) -> dict:
    """The plausibility checks of one image (module docstring) as a flat dict; ``passed`` is all of them."""
    left_name, right_name = lung_names(segmenter)
    ask = [left_name, right_name, *(["heart"] if "heart" in segmenter.structures else [])]
    predictions = segmenter.segment(image, ask)
    left, right = predictions[left_name].mask, predictions[right_name].mask
    heart = predictions["heart"].mask if "heart" in predictions else None
    width = np.asarray(image).shape[1]
    lx, rx = _centroid_x(left), _centroid_x(right)
    hx = _centroid_x(heart) if heart is not None else None
    row = {
        "lungs_asked": f"{left_name}, {right_name}",
        "left_area": round(float(left.mean()), 3),
        "right_area": round(float(right.mean()), 3),
        "left_main_component": round(main_component_share(left), 3),
        "right_main_component": round(main_component_share(right), 3),
        "sides_correct": lx is not None and rx is not None and rx < width / 2 < lx,
        "heart_between": None
        if heart is None
        else bool(hx is not None and rx is not None and lx is not None and rx < hx < lx),
        "invalid_answers": sorted(n for n, p in predictions.items() if not p.valid),
    }
    in_range = all(LUNG_AREA[0] <= row[f"{s}_area"] <= LUNG_AREA[1] for s in ("left", "right"))
    one_region = all(row[f"{s}_main_component"] >= MAIN_COMPONENT_SHARE for s in ("left", "right"))
    row["passed"] = bool(
        in_range
        and one_region
        and row["sides_correct"]
        and row["heart_between"] is not False
        and not row["invalid_answers"]
    )
    return row


def plausibility_study(models: dict[str, Segmenter], images: dict[str, Image.Image]) -> dict:
    """``{"rows": [...], "summary": {...}}``: the rows of :func:`check_image` per (model, image).

    The summary gives, per model, how many images pass every check. An image a model cannot segment (it raises:
    too small, not decodable) is skipped for that model and named in one warning, so one bad file never costs the
    whole run its results.
    """
    rows, skipped = [], []
    for key, model in models.items():
        for name, image in images.items():
            try:
                rows.append({"model": key, "image": name, **check_image(model, image)})
            except (ValueError, RuntimeError) as err:  # the segmenter's refusal of this one image
                skipped.append(f"{name} for {key} ({type(err).__name__}: {one_line(err)})")
    if skipped:
        warnings.warn(f"plausibility: skipped {len(skipped)} image(s): {'; '.join(skipped)}", stacklevel=2)
    summary = {
        f"{key} passed": f"{sum(r['passed'] for r in mine)} / {len(mine)} images"
        for key in models
        for mine in [[r for r in rows if r["model"] == key]]
    }
    return {"rows": rows, "summary": {"images": len(images), **summary}}


def plausibility_table(study: dict) -> str:
    """Markdown: one line per (model, image) with the lungs' areas, main-component shares and the checks."""
    lines = [
        "| model | image | lungs asked | left / right area | main component | sides | heart between | invalid | ok |",
        "|---|---|---|---:|---:|---|---|---|---|",
    ]
    for r in study["rows"]:
        lines.append(
            f"| {r['model']} | {r['image']} | {r['lungs_asked']} | {r['left_area']:.1%} / {r['right_area']:.1%} | "
            f"{r['left_main_component']:.2f} / {r['right_main_component']:.2f} | "
            f"{'yes' if r['sides_correct'] else 'no'} | "
            f"{'-' if r['heart_between'] is None else 'yes' if r['heart_between'] else 'no'} | "
            f"{', '.join(r['invalid_answers']) or 'none'} | {'yes' if r['passed'] else 'no'} |"
        )
    return "\n".join(lines)


__all__ = ["check_image", "main_component_share", "plausibility_study", "plausibility_table"]
