"""Robustness study: how segmentation scores fall as the input is rotated, scaled, shifted, cropped or padded.

    import datasets
    from chexanatomy.inference import load_segmenter
    from eval.robustness import plot_robustness, robustness_study, robustness_table

    rows = datasets.load_dataset("outputs/drr")["test"].filter(lambda r: r["view"] == "PA")
    study = robustness_study({"unet": load_segmenter("outputs/unet"), "vlm": load_segmenter("outputs/tiny_vlm")},
                             rows, structures=["lung_left", "lung_right", "heart"], max_images=6)
    plot_robustness(study, "reports/robustness.png")
    print(robustness_table(study))

For each image and each perturbation of the sweep (``eval.perturb``), image and reference masks are perturbed
together, every segmenter is asked once for all structures of that image, and each answer is scored against the
perturbed reference at the image's own resolution with ``eval.scores.score_structures`` (its empty-mask and
invalid-answer rules hold here). Identity perturbations (rotate 0, scale 1, ...) share one model call per image.

Aggregation mirrors ``score_structures``: per structure, the mean over images (HD95 over the images where it is
defined, see ``hd95_undefined``); per row, the macro mean over structures, each weighing the same.

Rows are corpus rows (``image`` PIL, ``structures``: list of ``{"name", "mask"}``) or records of the real-CXR
loaders in ``eval.real_cxr`` (``image``, ``masks``: ``{name: bool [H, W]}``). Pick the views you want before
calling (the DRR corpus also holds lateral views).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from chexanatomy.inference import Segmenter, grey_image
from chexanatomy.results import MISSING, fmt

from .perturb import DEFAULT_SWEEP, KINDS, Perturbation
from .scores import score_structures

Masks = dict[str, np.ndarray]
# (model, kind, magnitude) -> structure -> {"dice": [...], "hd95_px": [...], "invalid": [...]}, one entry per image
Tally = dict[tuple[str, str, float], dict[str, dict[str, list]]]


def row_sample(row: Mapping[str, Any], names: Sequence[str]) -> tuple[Image.Image, Masks]:
    """The image (PIL "L") and the reference masks ``{name: bool [H, W]}`` of ``names`` present in one row.

    Args:
        row: a corpus row (``structures``: list of ``{"name", "mask"}`` with PIL "1" masks) or a real-CXR record
            (``masks``: ``{name: bool [H, W]}``).
        names: structures wanted; those the row lacks are left out.
    """
    if "masks" in row:
        masks = row["masks"]
    else:
        masks = {s["name"]: s["mask"] for s in row["structures"]}
    return grey_image(row["image"]), {n: np.asarray(masks[n], dtype=bool) for n in names if n in masks}


def _row_names(row: Mapping[str, Any]) -> list[str]:
    return list(row["masks"]) if "masks" in row else [s["name"] for s in row["structures"]]


def _study_structures(segmenters: Mapping[str, Segmenter], structures: list[str] | None, first_row) -> list[str]:
    """``structures``, checked against every segmenter; default: those of the first row every segmenter knows."""
    if structures is None:
        names = [n for n in _row_names(first_row) if all(n in s.structures for s in segmenters.values())]
        if not names:
            raise ValueError("no structure of the first row is known to every segmenter; pass structures=[...]")
        return names
    for model, segmenter in segmenters.items():
        missing = [n for n in structures if n not in segmenter.structures]
        if missing:
            raise ValueError(f"segmenter {model!r} does not segment {missing}; drop them from structures")
    return list(structures)


def _score_answers(segmenter: Segmenter, image: Image.Image, truth: Masks) -> dict[str, dict[str, Any]]:
    """One ``segment`` call for all of ``truth``'s structures, scored per structure (Dice, HD95 px, invalid)."""
    predictions = segmenter.segment(image, list(truth))
    records = []
    for name, ref in truth.items():
        answer = predictions.get(name)  # a missing answer is scored as invalid
        valid = answer is not None and answer.valid
        records.append({"name": name, "ref": ref, "pred": answer.mask if valid else None, "valid": valid})
    per = score_structures(records)["per_structure"]
    return {n: {"dice": s["dice"], "hd95_px": s["hd95_px"], "invalid": s["invalid_rate"]} for n, s in per.items()}


def _add(tally: Tally, key: tuple[str, str, float], scores: dict[str, dict[str, Any]]) -> None:
    for name, values in scores.items():
        slot = tally.setdefault(key, {}).setdefault(name, {"dice": [], "hd95_px": [], "invalid": []})
        for metric, value in values.items():
            slot[metric].append(value)


def _study_image(
    segmenters: Mapping[str, Segmenter], image: Image.Image, truth: Masks, sweep: Sequence[Perturbation], tally: Tally
) -> None:
    """Every perturbation of one image, every model; identity perturbations reuse one call per model."""
    identity: dict[str, dict] = {}
    for perturbation in sweep:
        moved_image, moved_truth = (image, truth) if perturbation.is_identity else perturbation.apply(image, truth)
        for model, segmenter in segmenters.items():
            if perturbation.is_identity and model in identity:
                scores = identity[model]
            else:
                scores = _score_answers(segmenter, moved_image, moved_truth)
                if perturbation.is_identity:
                    identity[model] = scores
            _add(tally, (model, perturbation.kind, float(perturbation.magnitude)), scores)


def _mean(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def _summarise(per_name: dict[str, dict[str, list]]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Per-structure means over images, and their macro mean over structures."""
    per_structure = {
        name: {
            "dice": _mean(s["dice"]),
            "hd95_px": _mean(s["hd95_px"]),
            "invalid_rate": _mean(s["invalid"]),
            "hd95_undefined": sum(v is None for v in s["hd95_px"]),
            "images": len(s["dice"]),
        }
        for name, s in per_name.items()
    }
    macro = {key: _mean(s[key] for s in per_structure.values()) for key in ("dice", "hd95_px", "invalid_rate")}
    return macro, per_structure


def _result_rows(tally: Tally, models: Sequence[str], sweep: Sequence[Perturbation]) -> list[dict[str, Any]]:
    rows = []
    for model, perturbation in itertools.product(models, sweep):
        per_name = tally.get((model, perturbation.kind, float(perturbation.magnitude)), {})
        macro, per_structure = _summarise(per_name)
        images = max((s["images"] for s in per_structure.values()), default=0)
        rows.append(
            {
                "model": model,
                "perturbation": perturbation.kind,
                "magnitude": float(perturbation.magnitude),
                **macro,
                "images": images,
                "per_structure": per_structure,
            }
        )
    return rows


def _unique(sweep: Iterable[Perturbation]) -> list[Perturbation]:
    return list(dict.fromkeys(Perturbation(p.kind, float(p.magnitude)) for p in sweep))


def robustness_study(
    segmenters: Mapping[str, Segmenter],
    rows: Iterable[Mapping[str, Any]],
    structures: list[str] | None = None,
    sweep: Sequence[Perturbation] = DEFAULT_SWEEP,
    max_images: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Scores of every segmenter on every perturbation of every image.

    Args:
        segmenters: ``{model label: Segmenter}`` (``chexanatomy.inference``); each is called once per perturbed
            image with all structures.
        rows: corpus rows or real-CXR records (see the module docstring), e.g. a ``datasets.Dataset`` split.
        structures: vocabulary ids to score; default: the first row's structures that every segmenter knows.
            A row lacking one of them is scored on the others.
        sweep: the perturbations (``eval.perturb.DEFAULT_SWEEP``: 30, 5 of them identities sharing one call).
        max_images: use only the first ``max_images`` rows.
        progress: show a progress bar over images.

    Returns:
        A JSON-serialisable dict::

            {"rows": [{"model", "perturbation" (kind), "magnitude", "dice", "hd95_px" (pixels, None when
                       undefined everywhere), "invalid_rate", "images",
                       "per_structure": {name: {"dice", "hd95_px", "invalid_rate", "hd95_undefined", "images"}}}],
             "structures": [...], "sweep": [{"kind", "magnitude", "unit"}], "images": int, "seconds": float}

        One row per model and perturbation, in sweep order; scores are macro means over structures.

    Raises:
        ValueError: for no rows, or structures a segmenter does not know.
    """
    from tqdm.auto import tqdm

    start = time.perf_counter()
    sweep = _unique(sweep)
    iterator = iter(rows if max_images is None else itertools.islice(rows, max_images))
    first = next(iterator, None)
    if first is None:
        raise ValueError("robustness_study got no rows")
    names = _study_structures(segmenters, structures, first)
    tally: Tally = {}
    images = 0
    for row in tqdm(
        itertools.chain([first], iterator), total=max_images, desc="robustness", unit="image", disable=not progress
    ):
        image, truth = row_sample(row, names)
        _study_image(segmenters, image, truth, sweep, tally)
        images += 1
    return {
        "rows": _result_rows(tally, list(segmenters), sweep),
        "structures": names,
        "sweep": [{"kind": p.kind, "magnitude": p.magnitude, "unit": KINDS[p.kind][0]} for p in sweep],
        "images": images,
        "seconds": time.perf_counter() - start,
    }


# --------------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------------


def _kinds(study: Mapping[str, Any]) -> list[str]:
    return list(dict.fromkeys(r["perturbation"] for r in study["rows"]))


def _models(study: Mapping[str, Any]) -> list[str]:
    return list(dict.fromkeys(r["model"] for r in study["rows"]))


def _curve(study: Mapping[str, Any], model: str, kind: str, metric: str) -> tuple[list[float], list[float]]:
    rows = sorted(
        (r for r in study["rows"] if r["model"] == model and r["perturbation"] == kind), key=lambda r: r["magnitude"]
    )
    return [r["magnitude"] for r in rows], [np.nan if r[metric] is None else r[metric] for r in rows]


def plot_robustness(study: Mapping[str, Any], path: str | Path) -> Path:
    """Dice (top row) and HD95 in pixels (bottom row) against magnitude, one column per perturbation kind.

    Returns:
        The written image path (format from the suffix, e.g. ``.png``).
    """
    from matplotlib.figure import Figure  # no pyplot: no global backend state, renders with Agg

    kinds, models = _kinds(study), _models(study)
    fig = Figure(figsize=(3.2 * len(kinds), 6.0), layout="constrained")
    axes = fig.subplots(2, len(kinds), squeeze=False, sharey="row")
    for col, kind in enumerate(kinds):
        for model in models:
            for row, metric in enumerate(("dice", "hd95_px")):
                axes[row, col].plot(*_curve(study, model, kind, metric), marker="o", label=model)
        axes[0, col].set_title(kind)
        axes[1, col].set_xlabel(KINDS.get(kind, ("magnitude",))[0], fontsize=8)
    axes[0, 0].set_ylabel("Dice (macro)")
    axes[1, 0].set_ylabel("HD95 (px, macro)")
    axes[0, 0].set_ylim(0, 1.02)
    axes[0, -1].legend(fontsize=8)
    fig.suptitle(f"Robustness: {study['images']} images, {len(study['structures'])} structures")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def _worst(study: Mapping[str, Any], model: str, name: str) -> tuple[float | None, str]:
    """The lowest Dice of ``name`` over the sweep, and the perturbation that gave it."""
    scored = [
        (r["per_structure"][name]["dice"], f"{r['perturbation']} {r['magnitude']:g}")
        for r in study["rows"]
        if r["model"] == model and name in r["per_structure"]
    ]
    scored = [s for s in scored if s[0] is not None]
    return min(scored) if scored else (None, MISSING)


def _baseline(study: Mapping[str, Any], model: str, name: str) -> float | None:
    """Dice of ``name`` on the unperturbed images (the first identity row), None when the sweep has none."""
    for r in study["rows"]:
        if r["model"] == model and r["magnitude"] == KINDS.get(r["perturbation"], ("", None))[1]:
            return r["per_structure"].get(name, {}).get("dice")
    return None


def robustness_table(study: Mapping[str, Any]) -> str:
    """Markdown: macro scores per model and perturbation, then each structure's unperturbed and worst Dice."""
    lines = ["| model | perturbation | magnitude | Dice | HD95 (px) | invalid |", "|---|---|---:|---:|---:|---:|"]
    for r in study["rows"]:
        lines.append(
            f"| {r['model']} | {r['perturbation']} | {r['magnitude']:g} | {fmt(r['dice'])} | "
            f"{fmt(r['hd95_px'], 1)} | {fmt(r['invalid_rate'], 2)} |"
        )
    lines += ["", "| model | structure | Dice unperturbed | worst Dice | worst at |", "|---|---|---:|---:|---|"]
    for model, name in itertools.product(_models(study), study["structures"]):
        worst, at = _worst(study, model, name)
        lines.append(f"| {model} | {name} | {fmt(_baseline(study, model, name))} | {fmt(worst)} | {at} |")
    return "\n".join(lines) + "\n"


__all__ = ["plot_robustness", "robustness_study", "robustness_table", "row_sample"]
