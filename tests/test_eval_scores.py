"""Score functions against independent computations, the empty-mask rule, and the offline `evaluate` module."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from chexanatomy.mask_tokens import encode_box
from chexanatomy.masks import dice, iou, tight_box
from eval.box_statistics import box_statistics, reference_locs, x0_equals_y0_rate
from eval.scores import box_iou, hd95, score_structures

REPO = Path(__file__).resolve().parents[1]
METRIC_DIR = REPO / "eval" / "metrics" / "anatomy_segmentation"


def random_mask(rng, shape=(24, 32), kind="blobs"):
    """Random bool mask: a union of rectangles and disks ("blobs") or salt noise ("noise")."""
    if kind == "noise":
        return rng.random(shape) < 0.3
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    mask = np.zeros(shape, bool)
    for _ in range(rng.integers(1, 4)):
        cy, cx = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        if rng.random() < 0.5:
            mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= rng.integers(2, 8) ** 2
        else:
            mask[cy : cy + rng.integers(2, 10), cx : cx + rng.integers(2, 12)] = True
    return mask


def pixel_set(mask):
    return {(int(y), int(x)) for y, x in zip(*np.nonzero(mask), strict=True)}


def boundary_brute(mask):
    """Inside pixels with a 4-neighbour outside the mask or off the image, by explicit neighbour checks."""
    out = []
    h, w = mask.shape
    for y, x in zip(*np.nonzero(mask), strict=True):
        for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
            ny, nx = y + dy, x + dx
            if not (0 <= ny < h and 0 <= nx < w) or not mask[ny, nx]:
                out.append((y, x))
                break
    return np.array(out, float)


def hd95_brute(pred, ref, spacing=(1.0, 1.0)):
    a, b = boundary_brute(pred) * spacing, boundary_brute(ref) * spacing
    d = cdist(a, b)
    return max(np.percentile(d.min(axis=1), 95), np.percentile(d.min(axis=0), 95))


@pytest.mark.parametrize("seed", range(6))
def test_dice_and_iou_match_set_formulas(seed):
    rng = np.random.default_rng(seed)
    kind = "noise" if seed % 2 else "blobs"
    pred, ref = random_mask(rng, kind=kind), random_mask(rng, kind=kind)
    p, r = pixel_set(pred), pixel_set(ref)
    assert dice(pred, ref) == pytest.approx(2 * len(p & r) / (len(p) + len(r)))
    assert iou(pred, ref) == pytest.approx(len(p & r) / len(p | r))
    # 0/1 integer masks are read as masks
    assert dice(pred.astype(np.uint8), ref.astype(np.uint8)) == dice(pred, ref)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("spacing", [None, (0.5, 2.0)])
def test_hd95_matches_brute_force_pairwise_distances(seed, spacing):
    rng = np.random.default_rng(100 + seed)
    pred, ref = random_mask(rng), random_mask(rng)
    expected = hd95_brute(pred, ref, (1.0, 1.0) if spacing is None else spacing)
    assert hd95(pred, ref, spacing) == pytest.approx(expected)


def test_hd95_units_follow_spacing():
    ref = np.zeros((40, 40), bool)
    ref[10:20, 10:20] = True
    pred = np.roll(ref, 4, axis=1)  # shifted 4 columns to the right
    assert hd95(pred, ref) == pytest.approx(4.0)
    assert hd95(pred, ref, spacing_mm=(0.2, 0.5)) == pytest.approx(2.0)  # 4 columns x 0.5 mm
    assert hd95(ref, ref) == 0.0


def test_empty_mask_rule():
    empty, full = np.zeros((8, 8), bool), np.zeros((8, 8), bool)
    full[2:5, 2:5] = True
    assert dice(empty, empty) == 1.0 and iou(empty, empty) == 1.0
    assert dice(full, empty) == 0.0 and dice(empty, full) == 0.0
    assert iou(full, empty) == 0.0 and iou(empty, full) == 0.0
    assert hd95(empty, empty) is None
    assert hd95(full, empty) is None and hd95(empty, full, (1.0, 1.0)) is None


def test_mask_box_is_inclusive_exclusive_and_box_iou():
    mask = np.zeros((10, 12), bool)
    mask[2:5, 3:9] = True
    assert tight_box(mask) == (2, 3, 5, 9)
    assert tight_box(np.zeros((4, 4), bool)) is None
    assert box_iou((0, 0, 4, 4), (0, 0, 4, 4)) == 1.0
    assert box_iou((0, 0, 4, 4), (2, 2, 6, 6)) == pytest.approx(4 / (16 + 16 - 4))
    assert box_iou((0, 0, 2, 2), (2, 2, 4, 4)) == 0.0  # touching edges, exclusive ends: no overlap
    assert box_iou(None, None) == 1.0
    assert box_iou(None, (0, 0, 1, 1)) == 0.0 and box_iou((0, 0, 1, 1), None) == 0.0


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        dice(np.zeros((4, 4), bool), np.zeros((4, 5), bool))
    with pytest.raises(ValueError, match=r"record 1 \('heart'\)"):
        score_structures(
            [
                {"name": "heart", "pred": np.ones((4, 4)), "ref": np.ones((4, 4))},
                {"name": "heart", "pred": np.ones((4, 5)), "ref": np.ones((4, 4))},
            ]
        )


def square(shape, y0, x0, y1, x1):
    mask = np.zeros(shape, bool)
    mask[y0:y1, x0:x1] = True
    return mask


def test_invalid_answers_count_as_empty_predictions():
    ref = square((16, 16), 4, 4, 12, 12)
    out = score_structures(
        [
            {"name": "heart", "pred": ref, "ref": ref},
            {"name": "heart", "pred": ref, "ref": ref, "valid": False},  # decoded badly: ignored, scored empty
            {"name": "heart", "pred": None, "ref": ref},
            {"name": "lung_left", "pred": ref, "ref": ref},
        ]
    )
    heart = out["per_structure"]["heart"]
    assert heart["count"] == 3
    assert heart["invalid_rate"] == pytest.approx(2 / 3)
    assert heart["dice"] == pytest.approx(1 / 3) and heart["box_iou"] == pytest.approx(1 / 3)
    assert heart["hd95_px"] == 0.0 and heart["hd95_undefined"] == 2  # mean over the one defined value
    assert out["count"] == 4 and out["invalid_rate"] == pytest.approx(0.5)
    assert out["macro"]["invalid_rate"] == pytest.approx((2 / 3 + 0) / 2)


def test_macro_and_micro_differ_as_expected():
    big = square((64, 64), 0, 0, 40, 40)  # 1600 px, predicted perfectly
    small_ref = square((64, 64), 50, 50, 54, 54)  # 16 px
    small_pred = square((64, 64), 50, 52, 54, 56)  # half overlap: 8 px
    out = score_structures(
        [
            {"name": "lungs", "pred": big, "ref": big},
            {"name": "clavicle_left", "pred": small_pred, "ref": small_ref},
        ]
    )
    assert out["per_structure"]["clavicle_left"]["dice"] == pytest.approx(0.5)
    assert out["macro"]["dice"] == pytest.approx((1.0 + 0.5) / 2)
    # micro pools pixels: dominated by the large structure
    assert out["micro"]["dice"] == pytest.approx(2 * (1600 + 8) / (3200 + 32))
    assert out["micro"]["iou"] == pytest.approx((1600 + 8) / (1600 + 24))
    assert out["micro"]["dice"] > out["macro"]["dice"]


def test_summary_keys_units_and_json():
    ref = square((20, 20), 5, 5, 15, 15)
    pred = square((20, 20), 5, 7, 15, 17)
    records = [
        {"name": "heart", "pred": pred, "ref": ref},
        {"name": "heart", "pred": np.zeros_like(ref), "ref": np.zeros_like(ref)},  # both empty
        {"name": "lung_right", "pred": pred, "ref": ref, "pred_box": (5, 5, 15, 15)},
    ]
    no_spacing = score_structures(records)
    out = score_structures(records, spacing_mm=(0.5, 0.5))
    assert set(out) == {"per_structure", "macro", "micro", "count", "invalid_rate"}
    assert set(out["per_structure"]["heart"]) == {
        "dice", "iou", "hd95_px", "hd95_mm", "box_iou", "count", "invalid_rate", "hd95_undefined"
    }  # fmt: skip
    assert set(out["macro"]) == {"dice", "iou", "hd95_px", "hd95_mm", "box_iou", "invalid_rate"}
    assert set(out["micro"]) == {"dice", "iou"}
    heart = out["per_structure"]["heart"]
    assert heart["dice"] == pytest.approx((0.8 + 1.0) / 2)  # both-empty counts as a perfect answer
    assert heart["hd95_undefined"] == 1 and heart["hd95_px"] == pytest.approx(2.0)
    assert heart["hd95_mm"] == pytest.approx(1.0)
    assert no_spacing["per_structure"]["heart"]["hd95_mm"] is None and no_spacing["macro"]["hd95_mm"] is None
    assert out["per_structure"]["lung_right"]["box_iou"] == 1.0  # the given box, not the mask's box
    json.dumps(out)  # plain Python values only
    assert all(type(v) in (float, int, type(None)) for s in out["per_structure"].values() for v in s.values())


def test_per_record_spacing_overrides_default():
    ref = square((20, 20), 5, 5, 15, 15)
    pred = np.roll(ref, 2, axis=0)
    out = score_structures(
        [
            {"name": "heart", "pred": pred, "ref": ref, "spacing_mm": (0.25, 0.25)},
            {"name": "heart", "pred": pred, "ref": ref},
        ],
        spacing_mm=(1.0, 1.0),
    )
    assert out["per_structure"]["heart"]["hd95_mm"] == pytest.approx((0.5 + 2.0) / 2)


def test_no_records():
    out = score_structures([])
    assert out["count"] == 0 and out["per_structure"] == {} and out["macro"]["dice"] is None


@pytest.fixture(scope="module")
def metric(tmp_path_factory):
    evaluate = pytest.importorskip("evaluate")
    cache = tmp_path_factory.mktemp("hf_modules")
    mp = pytest.MonkeyPatch()
    mp.setattr(evaluate.config, "HF_MODULES_CACHE", cache)  # keep evaluate's copy of the module in tmp
    yield evaluate.load(str(METRIC_DIR), cache_dir=str(tmp_path_factory.mktemp("evaluate")))
    mp.undo()


def test_evaluate_module_matches_score_structures(metric):
    rng = np.random.default_rng(7)
    refs = [random_mask(rng) for _ in range(4)]
    preds = [random_mask(rng), None, random_mask(rng).astype(np.uint8), refs[3].tolist()]  # mixed input types
    names = ["lung_left", "lung_left", "heart", "clavicle_right"]
    valid = [True, False, True, True]
    got = metric.compute(predictions=preds, references=refs, names=names, valid=valid, spacing_mm=(0.35, 0.35))
    expected = score_structures(
        [
            {"name": n, "pred": None if p is None else np.asarray(p, bool), "ref": r, "valid": v}
            for n, p, r, v in zip(names, preds, refs, valid, strict=True)
        ],
        spacing_mm=(0.35, 0.35),
    )
    assert got == expected
    # masks added one by one give the same result
    for p, r in zip(preds, refs, strict=True):
        metric.add(prediction=p, reference=r)
    assert metric.compute(names=names, valid=valid, spacing_mm=(0.35, 0.35)) == expected


def test_evaluate_module_rejects_misaligned_names(metric):
    ref = np.ones((4, 4), bool)
    with pytest.raises(ValueError, match="names has 2 entries"):
        metric.compute(predictions=[ref], references=[ref], names=["heart", "lungs"])


def test_metric_card_example_runs(metric, monkeypatch, capsys):
    card = (METRIC_DIR / "README.md").read_text()
    assert card.startswith("---\ntitle: Anatomy Segmentation\n")
    code = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    monkeypatch.chdir(REPO)
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out.split()
    claimed = re.findall(r"# ([\d. ]+)\n", code)
    assert printed == " ".join(claimed).split()  # the numbers in the card's comments are what it prints


def test_the_metric_folder_carries_the_current_scoring_code():
    """The folder's masks.py is chexanatomy/masks.py byte for byte, its scores.py is eval/scores.py with a relative
    core import (python -m eval.metric_bundle writes both), and it cites CheXanatomy as the cards do."""
    from chexanatomy import CITATION
    from eval.metric_bundle import main, stale_files

    assert (METRIC_DIR / "masks.py").read_bytes() == (REPO / "chexanatomy" / "masks.py").read_bytes()
    assert stale_files() == [], "run python -m eval.metric_bundle"
    assert main(["--check"]) == 0
    assert CITATION in (METRIC_DIR / "anatomy_segmentation.py").read_text()
    assert CITATION in (METRIC_DIR / "README.md").read_text()


def test_a_stale_metric_folder_is_reported_and_rewritten(tmp_path):
    from eval.metric_bundle import stale_files, write_bundle

    assert sorted(stale_files(tmp_path)) == ["LICENSE", "masks.py", "scores.py"]
    (tmp_path / "scores.py").write_text("old")
    assert sorted(write_bundle(tmp_path)) == ["LICENSE", "masks.py", "scores.py"] and stale_files(tmp_path) == []


def test_x0_equals_y0_is_counted_in_tokens_for_answers_and_references():
    """The issue's sign of a model copying its previous token: the second `<loc>` equal to the first."""
    segs = "<seg001>" * 16
    copied = "<loc0126><loc0126><loc1023><loc1023>" + segs + " right lung"
    read = "<loc0100><loc0300><loc0900><loc0700>" + segs + " heart"
    answers = [copied, read, read, "<loc0400><loc0400> broken", "", "garbage"]  # "" is a U-Net's answer: no box
    wide = np.zeros((100, 200), bool)
    wide[10:50, 20:80] = True  # y0 = 10 of 100 and x0 = 20 of 200: one token value (102) though not one pixel
    tall = np.zeros((100, 200), bool)
    tall[10:50, 50:80] = True
    assert reference_locs(wide)[:2] == [102, 102]
    assert encode_box(tight_box(wide), (100, 200)).startswith("<loc0102>" * 2)  # as the training target writes it
    assert reference_locs(np.zeros((4, 4), bool)) == []

    stats = box_statistics(answers, [wide, tall, tall, np.zeros((100, 200), bool)])
    assert stats == {"x0_eq_y0_rate": 0.5, "x0_eq_y0_answers": 4, "reference_x0_eq_y0_rate": 1 / 3,
                     "reference_boxes": 3}  # fmt: skip
    assert x0_equals_y0_rate([]) == (None, 0)
