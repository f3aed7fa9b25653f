"""Running each model on a request and shaping its answers: overlays, the per-structure table, raw answers, timing."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import gradio as gr
import numpy as np
from PIL import Image

from chexanatomy.inference import Prediction, Segmenter, timed_segment
from chexanatomy.masks import dice

from .selection import structure_label

logger = logging.getLogger("chexanatomy.space")

MISSING = "—"
OVERLAY_ALPHA = 0.55  # mask opacity: the radiograph stays visible under the colours


@dataclass
class ModelResult:
    """One model's answers to one request: ``predictions`` name -> ``Prediction`` and the seconds they took."""

    title: str
    kind: str
    predictions: dict[str, Prediction]
    seconds: float


def run_model(title: str, model: Segmenter, image: Image.Image, names: list[str]) -> ModelResult:
    """``model``'s predictions for the ``names`` it knows (others are left out of its result)."""
    known = [n for n in names if n in model.structures]
    if not known:  # segment(image, []) would mean "every structure"
        return ModelResult(title, model.kind, {}, 0.0)
    try:
        predictions, seconds = timed_segment(model, image, known)
    except Exception as error:  # a model failure is reported for this request; the server keeps serving
        logger.exception("%s failed", title)
        raise gr.Error(f"The {title} failed on this image ({type(error).__name__}: {error}).") from None
    return ModelResult(title, model.kind, predictions, seconds)


def overlay(image: Image.Image, result: ModelResult | None) -> tuple[np.ndarray, list] | None:
    """``gr.AnnotatedImage`` value: RGB uint8 [H, W, 3] and one (float [H, W] opacity, label) per non-empty mask."""
    if result is None:
        return None
    found = [(p.mask * OVERLAY_ALPHA, structure_label(n)) for n, p in result.predictions.items() if p.area_px]
    return np.asarray(image.convert("RGB")), found


def table_headers(models: list[tuple[str, Segmenter]]) -> list[str]:
    """Columns: structure, per model area / box (/ valid for a VLM), then the models' Dice side by side."""
    headers = ["structure"]
    for title, model in models:
        headers += [f"{title} area px", f"{title} box y0,x0,y1,x1"] + (
            [f"{title} valid"] if model.kind == "vlm" else []
        )
    return headers + [f"{title} Dice" for title, _ in models]


def table_rows(names: list[str], results: list[ModelResult], truth: dict[str, np.ndarray]) -> list[list]:
    """One row per structure (see ``table_headers``); "—" where a model does not segment it or there is no truth."""
    rows = []
    for name in names:
        row, scores = [structure_label(name)], []
        for result in results:
            prediction = result.predictions.get(name)
            row += _model_cells(prediction, result.kind)
            known = prediction is not None and name in truth
            scores.append(round(dice(prediction.mask, truth[name]), 3) if known else MISSING)
        rows.append(row + scores)
    return rows


def _model_cells(prediction: Prediction | None, kind: str) -> list:
    """Area, box ("" when empty) and, for a VLM, validity of one prediction; "—" cells when there is none."""
    width = 3 if kind == "vlm" else 2
    if prediction is None:
        return [MISSING] * width
    box = ", ".join(str(v) for v in prediction.box) if prediction.box else ""
    return [prediction.area_px, box] + (["yes" if prediction.valid else "no"] if kind == "vlm" else [])


def raw_answers(results: list[ModelResult]) -> str:
    """The VLMs' raw answers, one "label: answer" line per structure (invalid ones marked)."""
    lines = [
        f"{structure_label(n)}: {p.answer}" + ("" if p.valid else "   [invalid: empty mask]")
        for r in results
        if r.kind == "vlm"
        for n, p in r.predictions.items()
    ]
    return "\n".join(lines) if lines else "(no VLM answers in this request)"


def timing_text(results: list[ModelResult], size: tuple[int, int]) -> str:
    """One line such as "VLM 1.23 s for 6 structures · U-Net 0.05 s for 6 structures · image 512x512 px"."""
    parts = [f"{r.title} {r.seconds:.2f} s for {len(r.predictions)} structures" for r in results]
    return " · ".join([*parts, f"image {size[0]}x{size[1]} px"])
