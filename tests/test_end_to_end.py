"""The whole chain on a phantom, as a user runs it: build, train two SFT steps, evaluate, write the card, ask the Space.

Each stage reads only what the previous one wrote to disk (the corpus folder, the model folder, results.json), so a
change that breaks the hand-over between two parts fails here even when each part's own tests pass.
"""

import json

import numpy as np
import torch
from huggingface_hub import ModelCard
from test_space import space_module
from trl import SFTConfig

from chexanatomy.inference import load_segmenter
from eval.__main__ import EvalConfig, run
from model_card.card import render_card
from train.sft import AnatomyArguments, train
from train.tiny_paligemma import TinySpec, build_model, build_processor

SPEC = TinySpec(image_size=32, patch_size=16, vision_layers=1, text_layers=1, hidden=32, heads=2)


def test_build_train_evaluate_card_and_space(phantom_corpus, phantom_rows, tmp_path):
    base, trained = tmp_path / "base", tmp_path / "vlm"
    processor = build_processor(SPEC)
    build_model(processor, SPEC).save_pretrained(base)
    processor.save_pretrained(base)
    torch.manual_seed(0)
    sft = SFTConfig(output_dir=str(trained), max_steps=2, per_device_train_batch_size=2, learning_rate=1e-3,
                    bf16=False, report_to="none", save_strategy="no", seed=0, use_cpu=True)  # fmt: skip
    args = AnatomyArguments(
        model_name_or_path=str(base), corpus_dir=str(phantom_corpus), lora=False, train_vision=True,
        structures_per_sample=2,
    )  # fmt: skip
    train(args, sft)
    assert (trained / "mask_codec" / "config.json").exists()

    out = tmp_path / "eval"
    config = EvalConfig(vlm=str(trained), unet="none", corpus_dir=str(phantom_corpus), split="train",
                        output_dir=str(out), max_images=1, studies=[], max_new_tokens=4, device="cpu")  # fmt: skip
    run(config, [])
    results = json.loads((out / "results.json").read_text())
    (evaluation,) = results["evaluations"]
    assert evaluation["model"] == "vlm" and 0 <= evaluation["summary"]["macro"]["dice"] <= 1

    render_card(results, "vlm", trained).save(tmp_path / "README.md")
    assert ModelCard.load(tmp_path / "README.md").data.eval_results

    phantom_rows[0]["image"].save(tmp_path / "upload.png")
    vlm = load_segmenter(str(trained), device="cpu", max_new_tokens=4)
    app = space_module("handler").SpaceApp(vlm, None, [], max_structures=2)
    vlm_overlay, _, table, answers, timing, _ = app.segment(str(tmp_path / "upload.png"), [], ["heart", "lung_left"])
    assert np.asarray(vlm_overlay[0]).shape == (64, 64, 3)
    assert [row[0] for row in table] == ["left lung", "heart"] and "VLM" in timing
    assert [line.split(": ")[0] for line in answers.splitlines()] == ["left lung", "heart"]  # the raw answers
