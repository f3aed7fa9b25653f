"""The evaluation command end to end on tiny models: batched inference, scores, studies, reports, model card."""

import json

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from PIL import Image

from chexanatomy.codec import default_tokenizer
from chexanatomy.inference import UNetSegmenter, VLMSegmenter, accepts_image_features, grey_image, load_segmenter
from chexanatomy.unet import AnatomyUNet
from eval.__main__ import EvalConfig, add_unconstrained, run
from eval.few_shot import task_mask
from model_card.card import render_card
from train.tiny_paligemma import TinySpec, build_model, build_processor

SPEC = TinySpec(image_size=64, vision_layers=1, text_layers=1, hidden=64, heads=2)


@pytest.fixture(scope="module")
def models(phantom_corpus, phantom_rows, tmp_path_factory):
    """Folders of an untrained tiny VLM (+ processor) and a tiny U-Net, as the training scripts save them."""
    root = tmp_path_factory.mktemp("models")
    processor = build_processor(SPEC)
    build_model(processor, SPEC).save_pretrained(root / "vlm")
    processor.save_pretrained(root / "vlm")
    names = sorted({s["name"] for r in phantom_rows for s in r["structures"]})
    AnatomyUNet(names, size=64, encoder="resnet18").save_pretrained(root / "unet")
    return root


@pytest.mark.parametrize("constrained", [True, False])
def test_batched_answers_equal_one_generate_per_prompt(models, phantom_rows, constrained):
    """One batched generate over all prompts answers as one plain generate per prompt, with the contract or without."""
    from transformers import LogitsProcessorList

    from chexanatomy.answer_contract import AnswerContract

    segmenter = load_segmenter(models / "vlm", device="cpu", max_new_tokens=6, constrained=constrained)
    image = phantom_rows[0]["image"]
    prompts = ["segment heart", "segment left lung", "detect trachea"]
    batched = segmenter.generate_answers(image, prompts)
    single = []
    for prompt in prompts:
        inputs = segmenter.processor(text=f"<image>{prompt}", images=image.convert("RGB"), return_tensors="pt")
        inputs.pop("labels")
        budget = {"max_new_tokens": 6}
        if constrained:
            contract = AnswerContract.for_prompts(segmenter.processor.tokenizer, [prompt], inputs["input_ids"].shape[1])
            budget = {"max_new_tokens": contract.max_new_tokens, "logits_processor": LogitsProcessorList([contract])}
        out = segmenter.model.generate(**inputs, **budget, do_sample=False)
        single += segmenter.processor.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert batched == single


def test_vision_tower_runs_once_per_image(models, phantom_rows):
    segmenter = load_segmenter(models / "vlm", device="cpu", max_new_tokens=4)
    assert accepts_image_features(segmenter.model), "this transformers' forward has no mm_encoder_outputs any more"
    calls = []
    hook = segmenter.model.model.vision_tower.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    try:
        predictions = segmenter.segment(phantom_rows[0]["image"], ["heart", "lung_left", "lung_right", "trachea"])
    finally:
        hook.remove()
    assert calls == [1]  # one image through the vision tower for all four prompts
    assert set(predictions) == {"heart", "lung_left", "lung_right", "trachea"}
    for p in predictions.values():  # an untrained model's answers are invalid: empty masks, never an exception
        assert p.mask.shape == (64, 64) and p.mask.dtype == bool
        assert p.valid or (not p.mask.any() and p.box is None)


def test_segmenters_share_one_interface(models, phantom_rows):
    unet = load_segmenter(models / "unet", device="cpu")
    assert isinstance(unet, UNetSegmenter) and unet.kind == "unet"
    vlm = load_segmenter(models / "vlm", device="cpu")
    assert isinstance(vlm, VLMSegmenter) and vlm.kind == "vlm"
    out = unet.segment(phantom_rows[0]["image"].resize((80, 70)), ["heart", "left lung"])  # display names resolve too
    assert set(out) == {"heart", "lung_left"} and out["heart"].mask.shape == (70, 80)
    with pytest.raises(KeyError, match="brain"):
        unet.segment(phantom_rows[0]["image"], ["brain"])


def test_valid_vlm_answer_decodes_to_the_structure_mask(models, phantom_rows):
    """A model whose answer is the stored target gives back the corpus mask (the decode path of segment)."""
    segmenter = load_segmenter(models / "vlm", device="cpu")
    row = phantom_rows[0]
    heart = next(s for s in row["structures"] if s["name"] == "heart")
    segmenter.generate_answers = lambda image, prompts: [heart["segment_target"]] * len(prompts)
    prediction = segmenter.segment(row["image"], ["heart"])["heart"]
    truth = np.asarray(heart["mask"], dtype=bool)
    assert prediction.valid and 2 * (prediction.mask & truth).sum() / (prediction.mask.sum() + truth.sum()) > 0.8


def test_grey_image_handles_16_bit_rgba_and_tiny():
    ramp = np.linspace(0, 4095, 64 * 64).reshape(64, 64).astype(np.uint16)
    grey = np.asarray(grey_image(Image.fromarray(ramp)))
    assert grey.min() == 0 and grey.max() == 255  # 12-bit data stretched, not clipped to white
    rgba = Image.new("RGBA", (32, 16), (200, 100, 50, 0))
    assert grey_image(rgba).size == (32, 16)
    with pytest.raises(ValueError, match="too small"):
        grey_image(Image.new("L", (1, 1)))


def test_eval_command_writes_results_report_plots_and_a_card(models, phantom_corpus, phantom_rows, tmp_path):
    assert any(task_mask(r) is not None for r in phantom_rows)
    out = tmp_path / "eval"
    config = EvalConfig(
        vlm=str(models / "vlm"),
        unet=str(models / "unet"),
        corpus_dir=str(phantom_corpus),
        split="train",
        output_dir=str(out),
        studies=["robustness", "few_shot", "domain_gap", "plausibility"],
        robustness_images=1,
        robustness_kinds=["rotate", "scale"],
        robustness_structures=["heart", "lung_left"],
        max_new_tokens=4,
        few_shot_k=[1, 2],
        few_shot_steps=1,
        device="cpu",
    )
    torch.manual_seed(0)
    results = run(config, ["--split", "train"])
    saved = json.loads((out / "results.json").read_text())
    assert saved["schema_version"] == 1 and {m["id"] for m in saved["models"]} == {"vlm", "unet"}
    unet_eval = next(e for e in saved["evaluations"] if e["model"] == "unet")
    assert set(unet_eval["per_structure"]) >= {"heart", "lung_left"}
    assert 0 <= unet_eval["summary"]["macro"]["dice"] <= 1
    assert {r["k"] for r in saved["studies"]["few_shot"]["rows"]} == {0, 1, 2}
    assert {r["perturbation"] for r in saved["studies"]["robustness"]["rows"]} == {"rotate", "scale"}
    gap = saved["studies"]["domain_gap"]["summary"]  # every split's frontal views against the bundled real images
    assert gap["n_real"] == 2 and gap["n_drr"] == 3  # 3 phantom subjects x 1 PA view, all splits
    assert {r["image"] for r in saved["studies"]["plausibility"]["rows"]} == {"00000001_000", "00027426_000"}
    for plot in results["plots"].values():
        assert (out / plot).stat().st_size > 1000
    report = (out / "report.md").read_text()
    assert "| `heart` | heart |" in report and "few shot" in report
    vlm_summary = next(e for e in saved["evaluations"] if e["model"] == "vlm")["summary"]
    assert vlm_summary["invalid_rate"] == 0.0  # constrained generation: valid by construction, even untrained
    assert 0 <= vlm_summary["invalid_rate_unconstrained"] <= 1 and "invalid_rate_unconstrained" not in unet_eval
    assert vlm_summary["x0_eq_y0_answers"] == vlm_summary["count"]  # every constrained answer has its box
    assert 0 <= vlm_summary["reference_x0_eq_y0_rate"] <= 1 and unet_eval["summary"]["x0_eq_y0_rate"] is None
    assert "## VLM vs U-Net" in report and "| robustness: rotate 10 | macro Dice, 2 structures |" in report
    card = render_card(saved, "unet", models / "unet")
    card.save(tmp_path / "README.md")
    assert ModelCard.load(tmp_path / "README.md").data.eval_results


def test_eval_config_rejects_what_cannot_run():
    with pytest.raises(ValueError, match="studies"):
        EvalConfig(studies=["typo"])
    with pytest.raises(ValueError, match="nothing to evaluate"):
        EvalConfig(vlm="none", unet="none")
    with pytest.raises(ValueError, match="scr"):
        EvalConfig(jsrt="/data/jsrt")
    with pytest.raises(ValueError, match="loc_decoding"):
        EvalConfig(loc_decoding="argmax")


def test_default_tokenizer_is_the_models_codec(models):
    segmenter = load_segmenter(models / "vlm", device="cpu")  # no mask_codec/ in the folder: the bundled default
    assert segmenter.tokenizer.settings() == default_tokenizer().settings()


class FakeVLM:
    """Just what ``add_unconstrained`` reads of a ``VLMSegmenter``."""

    kind, constrained = "vlm", True


def test_the_unconstrained_check_reruns_the_same_vlm_unconstrained_and_records_its_invalid_rate():
    seen = []

    def evaluate(segmenter, model_id):
        seen.append(segmenter)
        assert model_id == "vlm unconstrained"  # what its progress bar says
        return {"summary": {"invalid_rate": 0.15, "x0_eq_y0_rate": 0.25}, "seconds_per_image": 0.2}

    vlm = FakeVLM()
    entry = add_unconstrained({"model": "vlm", "summary": {"invalid_rate": 0.0}}, vlm, evaluate)
    assert entry["summary"] == {"invalid_rate": 0.0, "invalid_rate_unconstrained": 0.15,
                                "x0_eq_y0_rate_unconstrained": 0.25}  # fmt: skip
    assert entry["seconds_per_image_unconstrained"] == 0.2  # the check's cost, in the results
    assert [s.constrained for s in seen] == [False] and vlm.constrained  # a copy; the evaluated model is untouched
    vlm.constrained = False  # already unconstrained: its own rate, no second run
    assert add_unconstrained({"summary": {"invalid_rate": 0.1}}, vlm, evaluate)["summary"] == {
        "invalid_rate": 0.1, "invalid_rate_unconstrained": 0.1}  # fmt: skip
    unet = UNetSegmenter.__new__(UNetSegmenter)
    assert add_unconstrained({"summary": {}}, unet, evaluate) == {"summary": {}} and len(seen) == 1
