"""Robustness perturbations, the robustness study and the domain-gap report, on small synthetic images."""

import json
import warnings

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from chexanatomy.inference import Prediction, grey_image
from chexanatomy.masks import tight_box
from eval.domain_gap import domain_gap_study, domain_gap_table, load_image_folder, plot_domain_gap
from eval.perturb import DEFAULT_SWEEP, Perturbation, crop, pad, rotate, scale
from eval.robustness import plot_robustness, robustness_study, robustness_table

SIZE = 64


def rect(y0, x0, y1, x1, size=SIZE):
    mask = np.zeros((size, size), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def bright(mask):
    """A black image with the mask drawn white: the mask is where the image is bright."""
    return Image.fromarray(np.where(mask, 255, 0).astype(np.uint8))


def centroid(weights):
    return np.array(ndimage.center_of_mass(np.asarray(weights, dtype=float)))


# --------------------------------------------------------------------------------------------------
# Perturbations
# --------------------------------------------------------------------------------------------------


def test_identity_magnitudes_return_the_input_unchanged():
    mask = rect(10, 20, 30, 44)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (SIZE, SIZE), dtype=np.uint8))
    identities = [p for p in DEFAULT_SWEEP if p.is_identity]
    assert {p.kind for p in identities} == {p.kind for p in DEFAULT_SWEEP}
    for perturbation in identities:
        out, masks = perturbation.apply(image, {"heart": mask})
        assert np.array_equal(np.asarray(out), np.asarray(image)), perturbation
        assert np.array_equal(masks["heart"], mask), perturbation


def test_every_perturbation_keeps_the_mask_on_the_bright_square():
    mask = rect(12, 8, 30, 28)  # off centre, so every perturbation moves it
    for perturbation in DEFAULT_SWEEP:
        out, masks = perturbation.apply(bright(mask), {"square": mask})
        moved = masks["square"]
        assert out.size == (SIZE, SIZE) and moved.shape == (SIZE, SIZE)
        grey = np.asarray(out, dtype=float)
        disagree = (grey >= 128) != moved
        assert np.all(np.abs(grey[disagree] - 127.5) <= 1.5), perturbation  # only ties at the 0.5 threshold
        assert np.abs(centroid(np.asarray(out)) - centroid(moved)).max() < 0.5, perturbation


def test_rotation_by_plus_90_turns_counter_clockwise_as_displayed():
    mask = rect(4, 4, 12, 14)  # top-left
    out, masks = rotate(bright(mask), {"blob": mask}, 90)
    assert np.array_equal(masks["blob"], np.rot90(mask))  # numpy's rot90 turns counter-clockwise
    y0, x0, y1, x1 = tight_box(masks["blob"])
    assert y0 >= SIZE / 2 and x1 <= SIZE / 2  # now bottom-left
    assert np.abs(np.asarray(out, dtype=int) - np.rot90(np.asarray(bright(mask), dtype=int))).max() <= 1


def test_translation_by_whole_pixels_is_an_exact_shift_with_black_fill():
    mask = rect(20, 20, 40, 36)
    out, masks = Perturbation("translate_x", 4 / SIZE).apply(bright(mask), {"m": mask})
    assert np.array_equal(masks["m"], rect(20, 24, 40, 40))  # + = image right
    out, masks = Perturbation("translate_y", -0.7).apply(bright(mask), {"m": mask})
    assert not masks["m"].any() and not np.asarray(out).any()  # moved up out of the frame, black came in


def test_scale_changes_area_by_the_square_of_the_factor():
    mask = rect(16, 16, 48, 48)
    for factor in (0.7, 1.3):
        _, masks = scale(bright(mask), {"m": mask}, factor)
        ratio = masks["m"].sum() / mask.sum()
        assert ratio == pytest.approx(factor**2, rel=0.05), factor
        assert np.abs(centroid(masks["m"]) - centroid(mask)).max() < 0.5  # about the centre


def test_crop_and_pad_are_field_of_view_changes_at_the_original_size():
    mask = rect(8, 10, 50, 40)
    image = bright(mask)
    cropped, cropped_masks = crop(image, {"m": mask}, 0.1)
    zoomed, zoomed_masks = scale(image, {"m": mask}, 1 / 0.8)
    assert cropped.size == (SIZE, SIZE) and np.array_equal(cropped_masks["m"], zoomed_masks["m"])
    padded, padded_masks = pad(image, {"m": mask}, 0.2)
    assert padded_masks["m"].sum() / mask.sum() == pytest.approx(1 / 1.4**2, rel=0.08)
    assert not np.asarray(padded)[:3].any()  # the added border is black


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="lung_left"):
        rotate(bright(rect(0, 0, 4, 4)), {"lung_left": np.zeros((SIZE, SIZE + 1), bool)}, 5)
    with pytest.raises(ValueError, match="kind"):
        Perturbation("shear", 0.1)
    with pytest.raises(ValueError, match="crop"):
        Perturbation("crop", 0.5)


# --------------------------------------------------------------------------------------------------
# Robustness study
# --------------------------------------------------------------------------------------------------

TRUTH = {"heart": rect(30, 26, 46, 42), "lung_right": rect(10, 8, 44, 24), "lung_left": rect(10, 40, 44, 56)}


def phantom_row(seed):
    """A corpus-format row: PIL "L" image and PIL "1" masks; same anatomy, different noise per seed."""
    noise = np.random.default_rng(seed).normal(0, 6, (SIZE, SIZE))
    image = 40 + 120 * (TRUTH["lung_left"] | TRUTH["lung_right"]) + 200 * TRUTH["heart"] + noise
    image = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
    structures = [{"name": n, "mask": Image.fromarray(m).convert("1")} for n, m in TRUTH.items()]
    return {"image": image, "view": "PA", "structures": structures}


class OracleSegmenter:
    """Answers the reference of whichever perturbed phantom it is shown (looked up by the image's bytes)."""

    kind = "unet"
    structures = list(TRUTH)

    def __init__(self, rows, sweep):
        self.truths, self.calls = {}, []
        for row in rows:
            image = grey_image(row["image"])
            for perturbation in sweep:
                moved, masks = perturbation.apply(image, TRUTH)
                self.truths[moved.tobytes()] = masks

    def segment(self, image, structures=None):
        self.calls.append(list(structures))
        truth = self.truths[grey_image(image).tobytes()]
        return {n: Prediction(n, truth[n], tight_box(truth[n])) for n in structures}


class FixedSegmenter:
    """Ignores the image: always answers the unperturbed reference (or an invalid answer)."""

    kind = "vlm"
    structures = list(TRUTH)

    def __init__(self, valid=True):
        self.valid = valid

    def segment(self, image, structures=None):
        if not self.valid:
            return {n: Prediction(n, np.zeros((SIZE, SIZE), bool), None, False, "<seg>??") for n in structures}
        return {n: Prediction(n, TRUTH[n], tight_box(TRUTH[n])) for n in structures}


def rows_of(study, model):
    return {(r["perturbation"], r["magnitude"]): r for r in study["rows"] if r["model"] == model}


@pytest.fixture(scope="module")
def study():
    rows = [phantom_row(seed) for seed in range(2)]
    segmenters = {
        "oracle": OracleSegmenter(rows, DEFAULT_SWEEP),
        "fixed": FixedSegmenter(),
        "broken": FixedSegmenter(valid=False),
    }
    result = robustness_study(segmenters, rows, progress=False)
    result["oracle_calls"] = segmenters["oracle"].calls
    return result


def test_an_oracle_scores_dice_one_at_every_magnitude(study):
    oracle = rows_of(study, "oracle")
    assert len(oracle) == len(DEFAULT_SWEEP) and study["images"] == 2
    for key, row in oracle.items():
        assert row["dice"] == 1.0 and row["hd95_px"] == 0.0 and row["invalid_rate"] == 0.0, key
        assert set(row["per_structure"]) == set(TRUTH) and row["images"] == 2


def test_a_segmenter_that_ignores_the_image_drops_as_the_magnitude_grows(study):
    fixed = rows_of(study, "fixed")
    for kind in {p.kind for p in DEFAULT_SWEEP}:
        identity = next(p.magnitude for p in DEFAULT_SWEEP if p.kind == kind and p.is_identity)
        curve = sorted((abs(m - identity), r["dice"], m) for (k, m), r in fixed.items() if k == kind)
        assert curve[0][1] == 1.0, kind
        assert curve[-1][1] < 0.9, kind
        for side in (-1, 1):  # monotone on each side of the identity
            dices = [d for _, d, m in curve if np.sign(m - identity) in (0, side)]
            assert all(a >= b for a, b in zip(dices, dices[1:], strict=False)), (kind, dices)


def test_invalid_answers_are_counted_and_one_call_serves_all_structures(study):
    broken = rows_of(study, "broken")
    assert all(r["invalid_rate"] == 1.0 and r["dice"] == 0.0 and r["hd95_px"] is None for r in broken.values())
    identities = sum(p.is_identity for p in DEFAULT_SWEEP)
    calls = study["oracle_calls"]
    assert len(calls) == 2 * (len(DEFAULT_SWEEP) - identities + 1)  # identities share one call per image
    assert all(sorted(c) == sorted(TRUTH) for c in calls)


def test_robustness_report_is_json_a_table_and_a_figure(study, tmp_path):
    study = {k: v for k, v in study.items() if k != "oracle_calls"}
    json.dumps(study)
    table = robustness_table(study)
    assert "| fixed | rotate | 15 |" in table and "| oracle | heart | 1.000 | 1.000 |" in table
    path = plot_robustness(study, tmp_path / "robustness.png")
    assert path.stat().st_size > 10_000


def test_unknown_structures_are_refused():
    with pytest.raises(ValueError, match="fixed"):
        robustness_study({"fixed": FixedSegmenter()}, [phantom_row(0)], structures=["liver"], progress=False)


# --------------------------------------------------------------------------------------------------
# Domain gap
# --------------------------------------------------------------------------------------------------


def textured(seed, kind, size=96):
    """A radiograph-like image: a smooth random field on a dark-to-bright gradient, smoothed or noisy."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.normal(size=(size, size)), 6) * 25 + np.linspace(60, 190, size)[:, None]
    if kind == "noisy":
        field = field + rng.normal(0, 12, field.shape)
    else:
        field = ndimage.gaussian_filter(field, 1.5)
    return Image.fromarray(np.clip(field, 0, 255).astype(np.uint8))


def test_two_sets_from_one_generator_are_indistinguishable():
    a = [textured(seed, "noisy") for seed in range(14)]
    b = [textured(seed, "noisy") for seed in range(100, 114)]
    study = domain_gap_study(a, b, n_permutations=100)
    s = study["summary"]
    assert s["classifier_p_value"] > 0.05 and s["classifier_accuracy"] < 0.8
    noise_floor = max(s["histogram_w1_real_vs_real"], s["histogram_w1_drr_vs_drr"])
    assert s["histogram_w1_drr_vs_real"] < 2 * noise_floor + 0.01
    assert len(study["per_image"]) == 28 and {r["set"] for r in study["per_image"]} == {"drr", "real"}


def test_a_different_texture_is_told_apart(tmp_path):
    drr = {f"smooth_{i}": textured(i, "smooth") for i in range(12)}
    real = {f"noisy_{i}": textured(i + 50, "noisy") for i in range(12)}
    study = domain_gap_study(drr, real, n_permutations=200)
    s = study["summary"]
    assert s["classifier_accuracy"] > 0.95 and s["classifier_p_value"] < 0.01
    assert s["features"]["hf_energy_ratio"]["smd"] < -2  # DRRs (smooth) have less high-frequency energy
    row = study["per_image"][0]
    assert row["set"] == "drr" and row["id"] == "smooth_0" and len(row["histogram"]) == 64
    assert row["distance_to_other"] > row["distance_to_own"]
    json.dumps(study)
    table = domain_gap_table(study)
    assert "classifier balanced accuracy" in table and "| hf_energy_ratio |" in table
    assert plot_domain_gap(study, tmp_path / "gap.png").stat().st_size > 10_000


def test_unreadable_files_are_skipped_and_named(tmp_path):
    textured(0, "noisy").save(tmp_path / "a.png")
    (tmp_path / "sub").mkdir()
    deep = (np.asarray(textured(1, "noisy"), dtype=np.uint16) * 200).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "sub" / "b.png")  # 16-bit
    textured(2, "noisy").save(tmp_path / "c.jpg")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (tmp_path / "notes.txt").write_text("not an image, not even tried")
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable file\(s\): broken.png"):
        images = load_image_folder(tmp_path)
    assert list(images) == ["a", "c", "sub/b"]
    deep_levels = np.asarray(images["sub/b"]) * 255
    assert images["sub/b"].mode == "F" and not np.allclose(deep_levels, deep_levels.round())  # not cut to 8 bits
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert list(load_image_folder(tmp_path, max_images=1)) == ["a"]


def test_dicom_monochrome1_is_inverted(tmp_path):
    from test_space import write_dicom

    pixels = np.full((32, 32), 4000, np.uint16)
    pixels[8:16, 8:16] = 100  # low stored value: bright on a MONOCHROME1 display
    write_dicom(tmp_path / "x.dcm", pixels, "MONOCHROME1")
    image = np.asarray(load_image_folder(tmp_path)["x"])
    assert image[10, 10] > image[0, 0]
