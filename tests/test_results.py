"""One way to show evaluation numbers: the card and report.md share the summary sentence, the per-structure table
and the spelling of a missing value."""

from chexanatomy.results import MISSING, cell, fmt, markdown_table, pct, structure_table, summary_line
from eval.report import evaluation_markdown

EVALUATION = {
    "model": "unet", "dataset": {"id": "chexanatomy/drr", "name": "DRR", "split": "test", "synthetic": True},
    "summary": {"macro": {"dice": 0.5, "hd95_px": None}, "invalid_rate": 0.25},
    "per_structure": {"heart": {"dice": 0.9, "iou": None, "hd95_px": 3.0, "count": 2, "invalid_rate": 0.0},
                      "trachea": {"dice": None, "count": 2, "invalid_rate": 1.0}},
}  # fmt: skip


def test_a_missing_value_has_one_spelling():
    assert MISSING == "n/a"
    assert fmt(None) == pct(None) == cell(None) == MISSING
    assert fmt(0.12345) == "0.123" and fmt(12.345, 1) == "12.3" and pct(0.125) == "12.5 %" and cell(1234.5) == "1234"


def test_table_rows_best_dice_first_and_missing_numbers_shown_as_missing():
    columns, rows = structure_table(EVALUATION["per_structure"])
    assert columns[:3] == ["structure", "name", "Dice"] and "HD95 mm" not in columns
    assert [r[0] for r in rows] == ["`heart`", "`trachea`"]
    assert rows[0][3] == MISSING and rows[1][2] == MISSING and rows[1][-1] == "100.0 %"


def test_the_summary_leaves_out_what_the_results_do_not_hold():
    line = summary_line(EVALUATION)
    assert line == "macro Dice **0.500**; invalid answers 25.0 %."
    assert summary_line({}) == "No summary metrics in the results."


def test_report_md_shows_the_cards_table():
    section = "\n".join(evaluation_markdown(EVALUATION))
    assert section.startswith("## unet on DRR (test)")
    assert markdown_table(*structure_table(EVALUATION["per_structure"])) in section
    assert "| `trachea` | trachea | n/a |" in section
