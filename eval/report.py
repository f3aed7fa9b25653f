"""Reports of an evaluation run: ``results.json`` (the model card reads it), Markdown tables and PNG plots.

The schema, the summary sentence, the per-structure table and the number formats are ``chexanatomy.results``'s
(the model card shows the same).

Plots are drawn with matplotlib (Agg, no display): per-structure Dice bars per model and dataset, and an overlay
gallery (ground truth beside each model's masks). Study plots come from their own modules.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from chexanatomy.anatomy import STRUCTURES
from chexanatomy.masks import grey_levels
from chexanatomy.results import (
    COMPARISON_NOTE,
    SCHEMA_VERSION,
    comparison_table,
    evaluation_title,
    markdown_table,
    structure_table,
    summary_line,
)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def headline(evaluation: dict) -> str:
    """``model on dataset (split): summary sentence``, the line printed for each evaluation."""
    return f"{evaluation_title(evaluation)}: {summary_line(evaluation)}"


def evaluation_markdown(evaluation: dict) -> list[str]:
    """The ``report.md`` section of one evaluation: heading, summary sentence, per-structure table."""
    table = markdown_table(*structure_table(evaluation.get("per_structure") or {}))
    return [f"## {evaluation_title(evaluation)}", "", summary_line(evaluation), "", table, ""]


def plot_per_structure(evaluations: list[dict], path: Path) -> Path:
    """Horizontal Dice bars per structure (vocabulary order), one bar per model, for the first dataset's evaluations."""
    plt = _plt()
    names = [n for n in STRUCTURES if any(n in e["per_structure"] for e in evaluations)]
    names += sorted({n for e in evaluations for n in e["per_structure"]} - set(names))
    fig, ax = plt.subplots(figsize=(7, max(3.0, 0.16 * len(names) * max(1, len(evaluations)) ** 0.5 + 1)))
    height = 0.8 / max(len(evaluations), 1)
    for i, e in enumerate(evaluations):
        values = [(e["per_structure"].get(n) or {}).get("dice") or 0.0 for n in names]
        ax.barh(np.arange(len(names)) + i * height, values, height=height, label=e["model"])
    ax.set_yticks(np.arange(len(names)) + 0.4 - height / 2, names, fontsize=5)
    ax.invert_yaxis()
    ax.set(xlabel="Dice", xlim=(0, 1), title=f"per-structure Dice: {evaluations[0]['dataset'].get('name', '')}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def _overlay(image, masks: dict[str, np.ndarray]) -> np.ndarray:
    """RGB float [H, W, 3]: the grey image with each mask tinted in its own colour (alpha 0.45)."""
    grey = grey_levels(image)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    colours = _plt().get_cmap("tab20")
    for i, name in enumerate(sorted(masks)):
        colour = np.asarray(colours(i % 20)[:3])
        m = masks[name]
        rgb[m] = 0.55 * rgb[m] + 0.45 * colour
    return rgb


def plot_gallery(galleries: dict[str, list], path: Path, structures: tuple[str, ...] | None = None) -> Path:
    """Rows = images, columns = ground truth then each model; ``galleries`` maps model id -> ``GalleryItem`` list."""
    plt = _plt()
    models = list(galleries)
    rows = min(len(v) for v in galleries.values()) if galleries else 0
    if rows == 0:
        raise ValueError("no gallery images to draw")
    fig, axes = plt.subplots(rows, 1 + len(models), figsize=(3 * (1 + len(models)), 3 * rows), squeeze=False)
    for r in range(rows):
        first = galleries[models[0]][r]
        keep = [n for n in (structures or first.truth) if n in first.truth]
        axes[r, 0].imshow(_overlay(first.image, {n: first.truth[n] for n in keep}))
        axes[r, 0].set_title(f"ground truth ({first.view})", fontsize=8)
        for c, model in enumerate(models, start=1):
            item = galleries[model][r]
            axes[r, c].imshow(_overlay(item.image, {n: item.predicted[n] for n in keep if n in item.predicted}))
            axes[r, c].set_title(model, fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_results(results: dict, output_dir: Path) -> Path:
    """``results.json`` (schema version, models, evaluations, studies, plots) in ``output_dir``."""
    path = output_dir / "results.json"
    record = {"schema_version": SCHEMA_VERSION, **results}
    path.write_text(json.dumps(record, indent=2, default=float) + "\n", encoding="utf-8")
    return path


def comparison_markdown(results: dict) -> list[str]:
    """The ``report.md`` section "VLM vs U-Net" (``chexanatomy.results.comparison_table``); none without both."""
    columns, rows = comparison_table(results)
    if not rows:
        return []
    return ["## VLM vs U-Net", "", COMPARISON_NOTE, "", markdown_table(columns, rows), ""]


def write_markdown(results: dict, tables: dict[str, str], output_dir: Path) -> Path:
    """``report.md``: the VLM vs U-Net comparison, then each evaluation's summary and table, then each study's."""
    parts = ["# CheXanatomy evaluation", "", f"Command: `{results.get('command', '')}`", ""]
    parts += comparison_markdown(results)
    for e in results["evaluations"]:
        parts += evaluation_markdown(e)
    for name, table in tables.items():
        parts += [f"## {name.replace('_', ' ')}", "", table, ""]
    for name, plot in results.get("plots", {}).items():
        parts += [f"![{name}]({plot})", ""]
    path = output_dir / "report.md"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
