"""One way to show evaluation numbers: the card and report.md share the summary sentence, the per-structure table
and the spelling of a missing value."""

import pytest

from chexanatomy.results import (
    MISSING,
    cell,
    comparison_rows,
    comparison_table,
    fmt,
    markdown_table,
    pct,
    structure_table,
    summary_line,
)
from eval.report import comparison_markdown, evaluation_markdown

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
    assert cell([]) == "none" and cell(["lung_field_left", 0.5]) == "lung_field_left, 0.5"  # not "[]" in a card


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


def entry(model: str, dataset: dict, per_structure: dict, **summary) -> dict:
    """One evaluation entry of results.json (``chexanatomy.results``' schema) with the Dice and box IoU given."""
    per = {n: {"dice": d, "box_iou": b, "count": 2, "invalid_rate": 0.0} for n, (d, b) in per_structure.items()}
    return {"model": model, "dataset": dataset, "summary": {"macro": {}, **summary}, "per_structure": per}


DRR = {"id": "chexanatomy/drr", "name": "DRR", "split": "test", "synthetic": True, "lung_definition": "full"}
MONTGOMERY = {"id": "montgomery", "name": "Montgomery", "split": "all", "synthetic": False, "lung_definition": "scr"}
SHENZHEN = {"id": "shenzhen", "name": "Shenzhen", "split": "all", "synthetic": False, "lung_definition": "scr"}
VLM_ANSWERS = {"invalid_rate": 0.0, "invalid_rate_unconstrained": 0.15, "x0_eq_y0_rate": 0.25,
               "reference_x0_eq_y0_rate": 0.0}  # fmt: skip
COMPARED = {
    "schema_version": 1,
    "models": [{"id": "vlm", "kind": "vlm"}, {"id": "unet", "kind": "unet"}],
    "evaluations": [
        # the VLM knows no "rib_left_1"; "spleen" is under 1 % for both: neither enters the DRR row
        entry("vlm", DRR, {"heart": (0.5, 0.6), "lung_left": (0.7, 0.8), "spleen": (0.1, 0.2)},
              structures_ge_1pct=["heart", "lung_left"], macro_dice_ge_1pct=0.6, **VLM_ANSWERS),
        entry("vlm", MONTGOMERY, {"lung_left": (0.6, 0.5), "lung_right": (0.5, 0.6)}, **VLM_ANSWERS),
        entry("vlm", SHENZHEN, {"lungs": (0.7, 0.74)}, invalid_rate=0.0, invalid_rate_unconstrained=0.0,
              x0_eq_y0_rate=0.5, reference_x0_eq_y0_rate=0.0),
        entry("unet", DRR, {"heart": (0.8, 0.9), "lung_left": (0.9, 0.95), "rib_left_1": (0.5, 0.5)},
              structures_ge_1pct=["heart", "lung_left", "rib_left_1"], macro_dice_ge_1pct=0.733, invalid_rate=0.0,
              reference_x0_eq_y0_rate=0.0),
        entry("unet", MONTGOMERY, {"lung_left": (0.9, 0.85), "lung_right": (0.88, 0.85)}, invalid_rate=0.0),
        entry("unet", SHENZHEN, {"lungs": (0.88, 0.9)}, invalid_rate=0.0),
    ],
    "studies": {"robustness": {
        "structures": ["heart", "lung_left"], "sweep": [{"kind": "rotate", "magnitude": 10.0, "unit": "degrees"}],
        "rows": [{"model": "vlm", "perturbation": "rotate", "magnitude": 10.0, "dice": 0.4},
                 {"model": "unet", "perturbation": "rotate", "magnitude": 10.0, "dice": 0.7}]}},
}  # fmt: skip


def test_comparison_pairs_each_vlm_result_with_the_unets_on_the_same_data_and_structures():
    rows = comparison_rows(COMPARED)
    by = {(r["setting"], r["metric"]): r for r in rows}
    # order: DRR split, robustness, then each real set and lung definition
    settings = list(dict.fromkeys(r["setting"] for r in rows))
    assert settings == ["DRR (test)", "robustness: rotate 10", "Montgomery (all, lungs: scr)",
                        "Shenzhen (all, lungs: scr)"]  # fmt: skip
    drr = by["DRR (test)", "macro Dice, 2 structures >= 1 % of the image"]  # heart + lung_left, shared by both
    assert drr["vlm"] == pytest.approx(0.6) and drr["unet"] == pytest.approx(0.85)
    assert drr["difference"] == pytest.approx(-0.25)
    assert by["DRR (test)", "box IoU, same structures"]["unet"] == pytest.approx(0.925)
    rotate = by["robustness: rotate 10", "macro Dice, 2 structures"]
    assert (rotate["vlm"], rotate["unet"], rotate["difference"]) == pytest.approx((0.4, 0.7, -0.3))
    montgomery = by["Montgomery (all, lungs: scr)", "lung-field Dice"]  # per side, averaged
    assert (montgomery["vlm"], montgomery["unet"]) == pytest.approx((0.55, 0.89))
    assert by["Shenzhen (all, lungs: scr)", "box IoU"]["difference"] == pytest.approx(-0.16)
    free = by["Montgomery (all, lungs: scr)", "invalid answers, unconstrained"]
    assert free["vlm"] == 0.15 and free["unet"] is None and free["difference"] is None and free["rate"]
    copied = by["DRR (test)", "x0 == y0 rate of the boxes"]
    assert (copied["vlm"], copied["unet"], copied["reference"]) == (0.25, None, 0.0)
    assert len(rows) == 3 * 5 + 1


def test_comparison_table_formats_scores_rates_and_signed_differences():
    columns, rows = comparison_table(COMPARED)
    assert columns == ["setting", "metric", "VLM", "U-Net", "VLM - U-Net", "reference boxes"]
    assert rows[0] == ["DRR (test)", "macro Dice, 2 structures >= 1 % of the image", "0.600", "0.850", "-0.250", ""]
    assert ["DRR (test)", "x0 == y0 rate of the boxes", "25.0 %", MISSING, MISSING, "0.0 %"] in rows
    assert ["Montgomery (all, lungs: scr)", "invalid answers", "0.0 %", "0.0 %", "+0.0 pp", ""] in rows
    report = "\n".join(comparison_markdown(COMPARED))
    assert report.startswith("## VLM vs U-Net") and markdown_table(columns, rows) in report
    assert comparison_rows({**COMPARED, "models": COMPARED["models"][:1]}) == [] and comparison_markdown({}) == []


def test_the_summary_shows_both_invalid_rates_and_the_x0_equals_y0_rates():
    vlm = COMPARED["evaluations"][0]
    line = summary_line({**vlm, "seconds_per_image": 0.5, "seconds_per_image_unconstrained": 0.3})
    assert ("invalid answers 0.0 %; 15.0 % unconstrained; x0 == y0 in 25.0 % of the answers' boxes; 0.0 % of the "
            "reference boxes") in line and "0.3 s per image unconstrained" in line  # fmt: skip
    assert "x0 == y0" not in summary_line(COMPARED["evaluations"][3])  # the U-Net gives no boxes in tokens
