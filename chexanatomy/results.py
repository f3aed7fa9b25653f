"""The results of ``python -m eval`` (``results.json``): its schema version, and the one way numbers are shown.

``eval`` writes the file (``SCHEMA_VERSION``) and its ``report.md``; ``model_card`` reads it (``load_results``).
Both show an evaluation with ``summary_line`` and ``structure_table``, the VLM beside the U-Net with
``comparison_table``, and every number through ``fmt``/``pct``, so a value the results do not hold is spelled
``MISSING`` everywhere.

Schema (version 1): ``{"schema_version": 1, "created", "command", "config", "models": [{"id", "kind", "source",
"parameters"}], "evaluations": [{"model", "dataset": {"id", "name", "split", "images", "synthetic", ...},
"summary": {"macro": {...}, "micro": {...}, "invalid_rate", "count", ...}, "per_structure": {name: {...}},
"seconds_per_image"}], "studies": {...}, "plots": {name: path relative to the file}}``. A summary may also hold
``structures_ge_1pct`` (names, DRR splits), ``macro_dice_ge_1pct``, the x0 == y0 rates of ``eval.box_statistics``
(``x0_eq_y0_rate``, ``x0_eq_y0_answers``, ``reference_x0_eq_y0_rate``, ``reference_boxes``) and, for a VLM run with
the unconstrained check, ``invalid_rate_unconstrained`` and ``x0_eq_y0_rate_unconstrained`` (with the entry's
``seconds_per_image_unconstrained``).

Units: Dice, IoU and box IoU in [0, 1]; HD95 in pixels of the original image (``hd95_px``) or mm (``hd95_mm``);
rates are fractions in [0, 1].
"""

from __future__ import annotations

import json
from pathlib import Path

from .anatomy import LUNGS, STRUCTURES

SCHEMA_VERSION = 1
MISSING = "n/a"  # how a number the results do not hold is shown, in cards, reports and study tables
LUNG_REFERENCES = (*LUNGS, "lungs")  # a real set's lung-field references: per side, or both lungs as one mask


def load_results(path: Path | str) -> dict:
    """The results JSON written by ``python -m eval``.

    Raises:
        FileNotFoundError: when the file does not exist.
        ValueError: when its ``schema_version`` is not ``SCHEMA_VERSION``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"results file {path} does not exist: run `python -m eval` first")
    results = json.loads(path.read_text(encoding="utf-8"))
    if results.get("schema_version") != SCHEMA_VERSION:
        version = results.get("schema_version")
        raise ValueError(f"{path}: schema_version {version!r}, this release reads schema_version {SCHEMA_VERSION}")
    return results


def fmt(value, digits: int = 3) -> str:
    """A number with ``digits`` decimals; ``MISSING`` for None."""
    return MISSING if value is None else f"{value:.{digits}f}"


def pct(value) -> str:
    """A fraction in [0, 1] as a percentage with one decimal (``12.5 %``); ``MISSING`` for None."""
    return MISSING if value is None else f"{100 * value:.1f} %"


def cell(value) -> str:
    """Any study value as a Markdown table cell.

    Floats to 3 significant digits (whole above 1000); a list as its items joined by commas ("none" when empty).
    """
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(cell(v) for v in value) or "none"
    return MISSING if value is None else escape(value)


def escape(text) -> str:
    """Markdown table cell text: a ``|`` (even inside backticks) would end the cell."""
    return str(text).replace("|", "\\|")


def display_name(name: str) -> str:
    """The vocabulary's display name of a structure (the name itself when it is not in the vocabulary)."""
    return STRUCTURES[name].display if name in STRUCTURES else name


def _part(text: str, value, show=fmt) -> str | None:
    return None if value is None else text.format(show(value))


def summary_line(evaluation: dict) -> str:
    """One sentence of an evaluation's headline numbers (macro means over structures unless said otherwise).

    Numbers the results do not hold are left out.
    """
    summary = evaluation.get("summary") or {}
    macro, micro = summary.get("macro") or {}, summary.get("micro") or {}
    parts = [
        _part("macro Dice **{}**", macro.get("dice")),
        _part("IoU {}", macro.get("iou")),
        _part("HD95 {} px", macro.get("hd95_px"), lambda v: fmt(v, 1)),
        _part("HD95 {} mm", macro.get("hd95_mm"), lambda v: fmt(v, 1)),
        _part("box IoU {}", macro.get("box_iou")),
        _part("micro Dice {}", micro.get("dice")),
        _part("invalid answers {}", summary.get("invalid_rate"), pct),
        _part("{} unconstrained", summary.get("invalid_rate_unconstrained"), pct),
        _part("x0 == y0 in {} of the answers' boxes", summary.get("x0_eq_y0_rate"), pct),
        _part(
            "{} of the reference boxes",
            summary.get("reference_x0_eq_y0_rate") if summary.get("x0_eq_y0_rate") is not None else None,
            pct,
        ),
        _part("{} structure predictions", summary.get("count"), str),
        _part("macro Dice over structures covering >= 1 % of the image {}", summary.get("macro_dice_ge_1pct")),
        _part("{} s per image", evaluation.get("seconds_per_image"), lambda v: f"{v:.2g}"),
        _part("{} s per image unconstrained", evaluation.get("seconds_per_image_unconstrained"), lambda v: f"{v:.2g}"),
    ]
    shown = [part for part in parts if part is not None]
    return ("; ".join(shown) + ".") if shown else "No summary metrics in the results."


def evaluation_title(evaluation: dict) -> str:
    """``model on dataset (split[, lungs: definition])``: the heading of one evaluation."""
    return f"{evaluation['model']} on {dataset_title(evaluation['dataset'])}"


def dataset_title(d: dict) -> str:
    """``dataset (split[, lungs: definition])``: the lung definition is said for real radiographs only."""
    lungs = f", lungs: {d['lung_definition']}" if d.get("lung_definition") and not d.get("synthetic", True) else ""
    return f"{d.get('name', d.get('id', '?'))} ({d.get('split', '?')}{lungs})"


def structure_table(per_structure: dict) -> tuple[list[str], list[list[str]]]:
    """Columns and rows of the per-structure table, best Dice first (structures without a Dice last)."""
    with_mm = any(m.get("hd95_mm") is not None for m in per_structure.values())
    columns = ["structure", "name", "Dice", "IoU", "HD95 px", *(["HD95 mm"] * with_mm), "box IoU", "count", "invalid"]
    order = sorted(per_structure.items(), key=lambda kv: (kv[1].get("dice") is None, -(kv[1].get("dice") or 0), kv[0]))
    rows = [
        [f"`{name}`", display_name(name), fmt(m.get("dice")), fmt(m.get("iou")), fmt(m.get("hd95_px"), 1),
         *([fmt(m.get("hd95_mm"), 1)] if with_mm else []), fmt(m.get("box_iou")), str(m.get("count", MISSING)),
         pct(m.get("invalid_rate"))]
        for name, m in order
    ]  # fmt: skip
    return columns, rows


def markdown_table(columns: list[str], rows: list[list[str]], numeric_from: int = 2) -> str:
    """A Markdown table; columns from ``numeric_from`` on are right-aligned."""
    align = ["---" if i < numeric_from else "---:" for i in range(len(columns))]
    lines = ["| " + " | ".join(columns) + " |", "| " + " | ".join(align) + " |"]
    return "\n".join([*lines, *("| " + " | ".join(row) + " |" for row in rows)])


# --------------------------------------------------------------------------------------------------
# The paper's comparison: VLM vs U-Net, side by side
# --------------------------------------------------------------------------------------------------

COMPARISON_COLUMNS = ["setting", "metric", "VLM", "U-Net", "VLM - U-Net", "reference boxes"]
COMPARISON_NOTE = (  # the words under the table, in report.md and in the card
    "Each row scores both models on the same images and structures; the difference is VLM - U-Net (in percentage "
    "points for rates). An invalid answer breaks the token contract: constrained generation makes that impossible, "
    "so the unconstrained rate (the same model, free generation) is shown beside it. The x0 == y0 rate is the share "
    "of boxes whose second `<loc>` equals the first, beside the same rate of the reference boxes."
)


def comparison_rows(results: dict) -> list[dict]:
    """The VLM and the U-Net side by side, from the results alone (empty unless both models were evaluated).

    Rows, each ``{"setting", "metric", "vlm", "unet", "difference" (vlm - unet, None unless both are numbers),
    "reference" (the reference boxes' x0 == y0 rate, on that metric's row only), "rate" (a fraction shown as %)}``:

    In this order:

    * per synthetic (DRR) dataset: macro Dice and box IoU over the structures covering >= 1 % of the image that
      both models scored (``summary.structures_ge_1pct``; ``macro_dice_ge_1pct`` as recorded, when absent);
    * per robustness perturbation: the study's macro Dice (its structures are the same for every model);
    * per real dataset and lung definition: lung-field Dice and box IoU (mean over ``LUNG_REFERENCES``);
    * and for every dataset: invalid answers constrained and unconstrained, and the x0 == y0 rate of the boxes.
    """
    vlm, unet = (
        next((m["id"] for m in results.get("models", []) if m.get("kind") == k), None) for k in ("vlm", "unet")
    )
    if vlm is None or unet is None:
        return []
    by_kind: dict[bool, list[dict]] = {True: [], False: []}  # synthetic datasets first, real ones after robustness
    for mine, theirs in _pairs(results.get("evaluations") or [], vlm, unet):
        by_kind[bool(mine["dataset"].get("synthetic", True))] += _dataset_rows(mine, theirs)
    robustness = (results.get("studies") or {}).get("robustness") or {}
    return by_kind[True] + _robustness_rows(robustness, vlm, unet) + by_kind[False]


def _pairs(entries: list[dict], vlm: str, unet: str) -> list[tuple[dict, dict]]:
    """(VLM entry, U-Net entry) on the same dataset, split and lung definition, in the VLM's order."""
    unets = [t for t in entries if t["model"] == unet]
    return [(m, t) for m in entries if m["model"] == vlm for t in unets if _dataset_key(t) == _dataset_key(m)]


def _dataset_key(evaluation: dict) -> tuple:
    return tuple(evaluation["dataset"].get(k) for k in ("id", "split", "lung_definition", "source"))


def comparison_table(results: dict) -> tuple[list[str], list[list[str]]]:
    """Columns and formatted rows of ``comparison_rows`` (scores to 3 decimals, rates in %, signed differences)."""
    table = []
    for r in comparison_rows(results):
        show = pct if r["rate"] else fmt
        table.append(
            [
                escape(r["setting"]),
                r["metric"],
                show(r["vlm"]),
                show(r["unet"]),
                _signed(r["difference"], r["rate"]),
                show(r["reference"]) if r["reference"] is not None else "",
            ]
        )
    return COMPARISON_COLUMNS, table


def _signed(value, rate: bool) -> str:
    if value is None:
        return MISSING
    return f"{100 * value:+.1f} pp" if rate else f"{value:+.3f}"


def _row(setting: str, metric: str, vlm, unet, rate: bool = False, reference=None) -> dict:
    difference = vlm - unet if vlm is not None and unet is not None else None
    return {"setting": setting, "metric": metric, "vlm": vlm, "unet": unet, "difference": difference,
            "reference": reference, "rate": rate}  # fmt: skip


def _mean_over(evaluation: dict, names: list[str], key: str):
    values = [(evaluation["per_structure"].get(n) or {}).get(key) for n in names]
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _dataset_rows(vlm: dict, unet: dict) -> list[dict]:
    """The rows of one dataset: the scores on shared structures, then invalid answers and the x0 == y0 rate."""
    setting = dataset_title(vlm["dataset"])
    mine, theirs = vlm.get("summary") or {}, unet.get("summary") or {}
    scored = [n for n in vlm.get("per_structure") or {} if n in (unet.get("per_structure") or {})]
    if vlm["dataset"].get("synthetic", True):
        large = [n for n in mine.get("structures_ge_1pct") or [] if n in (theirs.get("structures_ge_1pct") or [])]
        if large:
            dice = _row(setting, f"macro Dice, {len(large)} structures >= 1 % of the image",
                        _mean_over(vlm, large, "dice"), _mean_over(unet, large, "dice"))  # fmt: skip
        else:  # results without the names: the summaries' own means
            dice = _row(setting, "macro Dice, structures >= 1 % of the image", mine.get("macro_dice_ge_1pct"),
                        theirs.get("macro_dice_ge_1pct"))  # fmt: skip
        boxes = _row(setting, "box IoU, same structures", _mean_over(vlm, large, "box_iou"),
                     _mean_over(unet, large, "box_iou"))  # fmt: skip
    else:
        lungs = [n for n in scored if n in LUNG_REFERENCES]
        dice = _row(setting, "lung-field Dice", _mean_over(vlm, lungs, "dice"), _mean_over(unet, lungs, "dice"))
        boxes = _row(setting, "box IoU", _mean_over(vlm, lungs, "box_iou"), _mean_over(unet, lungs, "box_iou"))
    return [
        dice,
        boxes,
        _row(setting, "invalid answers", mine.get("invalid_rate"), theirs.get("invalid_rate"), rate=True),
        _row(setting, "invalid answers, unconstrained", mine.get("invalid_rate_unconstrained"),
             theirs.get("invalid_rate_unconstrained"), rate=True),
        _row(setting, "x0 == y0 rate of the boxes", mine.get("x0_eq_y0_rate"), theirs.get("x0_eq_y0_rate"), rate=True,
             reference=mine.get("reference_x0_eq_y0_rate")),
    ]  # fmt: skip


def _robustness_rows(study: dict, vlm: str, unet: str) -> list[dict]:
    """Per perturbation of the robustness study, both models' macro Dice on the study's (shared) structures.

    The setting names the kind and the magnitude in that kind's unit (``eval.perturb.KINDS``).
    """
    by_key = {(r["model"], r["perturbation"], float(r["magnitude"])): r for r in study.get("rows") or []}
    metric = f"macro Dice, {len(study['structures'])} structures" if study.get("structures") else "macro Dice"
    rows = []
    for kind, magnitude in dict.fromkeys((r["perturbation"], float(r["magnitude"])) for r in study.get("rows") or []):
        mine, theirs = by_key.get((vlm, kind, magnitude)), by_key.get((unet, kind, magnitude))
        if mine is None or theirs is None:
            continue
        rows.append(_row(f"robustness: {kind} {magnitude:g}", metric, mine.get("dice"), theirs.get("dice")))
    return rows
