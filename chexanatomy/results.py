"""The results of ``python -m eval`` (``results.json``): its schema version, and the one way numbers are shown.

``eval`` writes the file (``SCHEMA_VERSION``) and its ``report.md``; ``model_card`` reads it (``load_results``).
Both show an evaluation with ``summary_line`` and ``structure_table``, and every number through ``fmt``/``pct``,
so a value the results do not hold is spelled ``MISSING`` everywhere.

Schema (version 1): ``{"schema_version": 1, "created", "command", "config", "models": [{"id", "kind", "source",
"parameters"}], "evaluations": [{"model", "dataset": {"id", "name", "split", "images", "synthetic", ...},
"summary": {"macro": {...}, "micro": {...}, "invalid_rate", "count", ...}, "per_structure": {name: {...}},
"seconds_per_image"}], "studies": {...}, "plots": {name: path relative to the file}}``. Units: Dice, IoU and box IoU
in [0, 1]; HD95 in pixels of the original image (``hd95_px``) or mm (``hd95_mm``); rates are fractions in [0, 1].
"""

from __future__ import annotations

import json
from pathlib import Path

from .anatomy import STRUCTURES

SCHEMA_VERSION = 1
MISSING = "n/a"  # how a number the results do not hold is shown, in cards, reports and study tables


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
    """Any study value as a Markdown table cell: floats to 3 significant digits (whole above 1000)."""
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
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
        _part("{} structure predictions", summary.get("count"), str),
        _part("macro Dice over structures covering >= 1 % of the image {}", summary.get("macro_dice_ge_1pct")),
        _part("{} s per image", evaluation.get("seconds_per_image"), lambda v: f"{v:.2g}"),
    ]
    shown = [part for part in parts if part is not None]
    return ("; ".join(shown) + ".") if shown else "No summary metrics in the results."


def evaluation_title(evaluation: dict) -> str:
    """``model on dataset (split[, lungs: definition])``: the heading of one evaluation."""
    d = evaluation["dataset"]
    lungs = f", lungs: {d['lung_definition']}" if d.get("lung_definition") and not d.get("synthetic", True) else ""
    return f"{evaluation['model']} on {d.get('name', d.get('id', '?'))} ({d.get('split', '?')}{lungs})"


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
