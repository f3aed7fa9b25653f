"""The card's body sections from the results: per evaluation, VLM vs U-Net, per study, weakest structures, plots.

Each returns plain template input (strings, lists, dicts); numbers are shown through ``chexanatomy.results``.
"""

from __future__ import annotations

from pathlib import Path

from chexanatomy.results import COMPARISON_NOTE, cell, comparison_table, structure_table, summary_line

LOWEST_SHOWN = 5


def evaluation_sections(evaluations: list[dict]) -> list[dict]:
    """Template input per evaluation: dataset description, summary sentence and per-structure table."""
    sections = []
    for e in evaluations:
        ds = e["dataset"]
        columns, rows = structure_table(e.get("per_structure") or {})
        about = [f"`{ds['id']}`", f"split `{ds.get('split', '?')}`", f"{ds.get('images', '?')} images"]
        about += ["synthetic (DRR)" if ds.get("synthetic") else "real radiographs"]
        if ds.get("lung_definition"):
            about.append(f"lung definition: {ds['lung_definition']}")
        sections.append({"title": ds.get("name", ds["id"]), "about": ", ".join(about), "summary": summary_line(e),
                         "columns": columns, "rows": rows})  # fmt: skip
    return sections


def comparison_section(results: dict) -> dict | None:
    """Template input of "VLM vs U-Net": ``{"note", "columns", "rows"}``, or None unless both models were evaluated.

    The same table as ``report.md``'s (``chexanatomy.results.comparison_table``), whichever model the card is for.
    """
    columns, rows = comparison_table(results)
    return {"note": COMPARISON_NOTE, "columns": columns, "rows": rows} if rows else None


def study_sections(studies: dict | None, model_id: str) -> list[dict]:
    """Template input per study: its rows of ``model_id`` as a table and/or its summary as ``key: value`` lines.

    Rows without a ``model`` key are shared by all models; studies with nothing for this model are left out.
    Nested values (a row's per-structure breakdown) are not table cells: they stay in ``results.json``.
    """
    sections = []
    for key, study in (studies or {}).items():
        if not isinstance(study, dict):
            continue
        rows = [r for r in study.get("rows") or [] if r.get("model", model_id) == model_id]
        columns = [k for k in dict.fromkeys(k for r in rows for k in r if k != "model")
                   if not any(isinstance(r.get(k), dict) for r in rows)]  # fmt: skip
        table = [[cell(r.get(c)) for c in columns] for r in rows]
        summary = [f"{k}: {cell(v)}" for k, v in (study.get("summary") or {}).items() if not isinstance(v, dict)]
        if table or summary:
            title = key.replace("_", " ").capitalize()
            sections.append({"title": title, "columns": columns, "rows": table, "summary": summary})
    return sections


def lowest_structures(evaluations: list[dict], n: int = LOWEST_SHOWN) -> list[dict]:
    """Per evaluation, the ``n`` structures with the lowest Dice: ``{"dataset", "structures": [(name, dice)]}``."""
    out = []
    for e in evaluations:
        scored = [(name, m["dice"]) for name, m in (e.get("per_structure") or {}).items() if m.get("dice") is not None]
        if scored:
            worst = sorted(scored, key=lambda kv: (kv[1], kv[0]))[:n]
            out.append({"dataset": e["dataset"].get("name", e["dataset"]["id"]), "structures": worst})
    return out


def plot_links(results: dict) -> dict[str, str]:
    """``{plot name: link relative to the card}``: every plot of the results, as ``plots/<file name>``."""
    return {name: f"plots/{Path(path).name}" for name, path in (results.get("plots") or {}).items() if path}
