"""The VLM's three aids for learning from scratch: constrained answers, the <loc> prior, a pre-trained vision tower.

* ``chexanatomy.answer_contract``: whatever the logits (fuzzed), every generated answer is inside the token contract.
* ``train.loc_prior``: ordered ``<loc>`` embeddings and soft targets that make a near miss cheaper than a far one.
* ``train.vision_pretrain``: the tower learns the masks, the folder starts ``train.sft``, the lineage records it.
"""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import AutoModelForImageTextToText, LogitsProcessorList

from chexanatomy.answer_contract import AnswerContract, parse_prompt
from chexanatomy.codec import default_tokenizer, load_codec
from chexanatomy.finetune import LocSmoothing, answer_only_loss
from chexanatomy.mask_tokens import decode_detections
from chexanatomy.training_record import read_training_record
from train.loc_prior import (
    init_loc_embeddings,
    loc_smoothing,
    loc_token_range,
    ordered_loc_embeddings,
    untie_output_embeddings,
)
from train.tiny_paligemma import TinySpec, build_model, build_processor

SPEC = TinySpec(image_size=64, vision_layers=1, text_layers=1, hidden=64, heads=2)


@pytest.fixture(scope="module")
def processor():
    return build_processor(SPEC)


def _generate_with_random_logits(contract: AnswerContract, prompt_length: int, rows: int, seed: int) -> torch.Tensor:
    """Greedy generation where the 'model' is random noise: only the contract shapes the answer."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.zeros(rows, prompt_length, dtype=torch.long)
    for _ in range(contract.max_new_tokens):
        scores = torch.randn(rows, 1794, generator=generator) * 30  # softcapped logits span about +-30
        ids = torch.cat([ids, contract(ids, scores).argmax(-1, keepdim=True)], 1)
    return ids[:, prompt_length:]


@pytest.mark.parametrize("loc_decoding", ["median", "generate"])
@pytest.mark.parametrize("seed", range(5))
def test_constrained_answers_are_valid_whatever_the_logits(processor, seed, loc_decoding):
    tokenizer = processor.tokenizer
    prompts = ["segment left lung", "segment heart ; right lung ; aorta", "detect heart", "segment trachea"]
    contract = AnswerContract.for_prompts(tokenizer, prompts, prompt_length=7, loc_decoding=loc_decoding)
    answers = tokenizer.batch_decode(_generate_with_random_logits(contract, 7, len(prompts), seed),
                                     skip_special_tokens=True)  # fmt: skip
    codec_tokens = default_tokenizer(load_codec("default"))
    for prompt, answer in zip(prompts, answers, strict=True):
        task, names = parse_prompt(prompt)
        objects = codec_tokens.decode(answer, (64, 64)) if task == "segment" else decode_detections(answer, (64, 64))
        assert [o.name for o in objects] == names, answer
        assert all(o.valid for o in objects), answer
        assert all(o.box_yxyx[2] > o.box_yxyx[0] and o.box_yxyx[3] > o.box_yxyx[1] for o in objects), answer


@pytest.mark.parametrize("beams", [2, 3])
def test_every_beam_of_every_prompt_stays_inside_the_contract(processor, beams):
    """generate(num_beams=k) hands the contract k consecutive rows per prompt: each follows its own prompt's plan."""
    tokenizer = processor.tokenizer
    prompts = ["segment left lung", "detect heart ; aorta"]
    contract = AnswerContract.for_prompts(tokenizer, prompts, prompt_length=5)
    answers = tokenizer.batch_decode(_generate_with_random_logits(contract, 5, len(prompts) * beams, seed=beams),
                                     skip_special_tokens=True)  # fmt: skip
    codec_tokens = default_tokenizer(load_codec("default"))
    for row, answer in enumerate(answers):
        task, names = parse_prompt(prompts[row // beams])
        objects = codec_tokens.decode(answer, (64, 64)) if task == "segment" else decode_detections(answer, (64, 64))
        assert [o.name for o in objects] == names and all(o.valid for o in objects), answer
    with pytest.raises(ValueError, match="multiple"):
        contract(torch.zeros(3, 5, dtype=torch.long), torch.zeros(3, 1794))


def test_a_beam_search_answers_through_the_contract_and_comes_from_the_folder(processor, tmp_path):
    """VLMSegmenter(num_beams=k) runs a valid beam search; without it, the folder's generation_config decides."""
    from chexanatomy.inference import VLMSegmenter, load_segmenter
    from train.sft import set_generation_defaults

    model = build_model(processor, SPEC).eval()
    tokens = default_tokenizer(load_codec("default"))
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (80, 72), dtype=np.uint8))
    greedy = VLMSegmenter(model, processor, tokens, structures=["heart", "lung_left"])
    beam = VLMSegmenter(model, processor, tokens, structures=["heart", "lung_left"], num_beams=3)
    assert greedy.beams == 1 and beam.beams == 3
    beam_predictions = beam.segment(image)
    beam_answers = {n: p.answer for n, p in beam_predictions.items()}
    for prediction in beam_predictions.values():
        assert prediction.valid and prediction.mask.shape == (80, 72)
    # the seeded model answers differently greedy: the folder check below can tell the two apart
    assert {n: p.answer for n, p in greedy.segment(image).items()} != beam_answers
    with pytest.raises(ValueError, match="num_beams"):
        VLMSegmenter(model, processor, tokens, num_beams=0)
    set_generation_defaults(model, num_beams=3)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = load_segmenter(tmp_path, device="cpu", local_only=True, structures=["heart", "lung_left"])
    assert loaded.beams == 3 and json.loads((tmp_path / "generation_config.json").read_text())["num_beams"] == 3
    assert {n: p.answer for n, p in loaded.segment(image).items()} == beam_answers


def test_the_far_edge_always_has_room(processor):
    """y0 = 1023 would leave no room for y1 > y0: the contract never offers it, even when the model wants it."""
    tokenizer = processor.tokenizer
    first, _ = loc_token_range(tokenizer)
    contract = AnswerContract.for_prompts(tokenizer, ["detect heart"], prompt_length=3)
    ids = torch.zeros(1, 3, dtype=torch.long)
    scores = torch.arange(1794, dtype=torch.float32)[None]  # the model prefers ever later bins, the last most
    assert int(contract(ids, scores).argmax()) == first + 1022
    ids = torch.cat([ids, torch.tensor([[first + 1022, first + 5]])], 1)
    scores = torch.zeros(1, 1794)
    scores[0, first + 3] = 100.0  # y1 = 3 < y0 = 1022: not allowed
    assert int(contract(ids, scores).argmax()) == first + 1023


def test_a_box_edge_is_the_median_of_the_models_belief_not_its_sharpest_peak(processor):
    """34 % on bin 100 (a copied edge), 66 % spread over bins 600-610: the edge goes to 602, not to 100."""
    tokenizer = processor.tokenizer
    first, _ = loc_token_range(tokenizer)
    ids = torch.zeros(1, 3, dtype=torch.long)
    probabilities = torch.full((1794,), 1e-12)
    probabilities[first + 100] = 0.34
    probabilities[first + 600 : first + 611] = 0.06  # cumulative 0.40, 0.46, 0.52 at 600, 601, 602
    scores = probabilities.log()[None]
    median = AnswerContract.for_prompts(tokenizer, ["detect heart"], prompt_length=3)
    generate = AnswerContract.for_prompts(tokenizer, ["detect heart"], prompt_length=3, loc_decoding="generate")
    chosen = median(ids, scores)
    assert int(chosen.argmax()) - first == 602 and int(torch.isfinite(chosen).sum()) == 1
    assert int(generate(ids, scores).argmax()) - first == 100
    # the far edge: the median of what is allowed (y1 > y0 = 603), never a forbidden bin
    after = torch.cat([ids, torch.tensor([[first + 603, first + 7]])], 1)
    assert int(median(after, scores).argmax()) - first == 607
    seg = torch.cat([after, torch.tensor([[first + 607, first + 9]])], 1)  # at a <seg> slot: the model's argmax
    seg_scores = torch.randn(1, 1794)
    assert torch.equal(median(seg, seg_scores), generate(seg, seg_scores))
    with pytest.raises(ValueError, match="loc_decoding"):
        AnswerContract.for_prompts(tokenizer, ["detect heart"], prompt_length=3, loc_decoding="mean")


def test_a_model_generates_through_the_contract_to_the_end(processor):
    """A random tiny model, greedy, with the contract: every answer ends in <eos>, no answer runs past its plan."""
    model = build_model(processor, SPEC).eval()
    prompts = ["segment left lung", "detect heart ; aorta"]
    image = processor.image_processor(np.zeros((64, 64, 3), np.uint8), return_tensors="pt")["pixel_values"]
    inputs = processor(text=[f"<image>{p}" for p in prompts], images=[np.zeros((64, 64, 3), np.uint8)] * 2,
                       return_tensors="pt", padding="longest")  # fmt: skip
    assert inputs["pixel_values"].shape == image.expand(2, -1, -1, -1).shape
    contract = AnswerContract.for_prompts(processor.tokenizer, prompts, inputs["input_ids"].shape[1])
    out = model.generate(**inputs, logits_processor=LogitsProcessorList([contract]),
                         max_new_tokens=contract.max_new_tokens, do_sample=False)  # fmt: skip
    answers = out[:, inputs["input_ids"].shape[1] :]
    eos = processor.tokenizer.eos_token_id
    assert [int((row == eos).nonzero()[0]) + 1 for row in answers] == [len(p) for p in contract.plans]


def test_prompts_outside_the_contract_are_refused(processor):
    with pytest.raises(ValueError, match="segment NAME"):
        AnswerContract.for_prompts(processor.tokenizer, ["caption en"], prompt_length=3)
    with pytest.raises(ValueError, match="segment NAME"):
        AnswerContract.for_prompts(processor.tokenizer, ["segment heart ; "], prompt_length=3)


def test_ordered_loc_embeddings_make_neighbours_alike():
    table = ordered_loc_embeddings(192, rms=0.02)
    assert table.shape == (1024, 192)
    assert abs(float(table.pow(2).mean().sqrt()) - 0.02) < 2e-3
    unit = torch.nn.functional.normalize(table, dim=1)
    similarity = unit @ unit[500]
    assert similarity[501] > similarity[520] > similarity[700]
    assert similarity[499] > similarity[480] > similarity[200]
    assert float(similarity[[0, 100, 900, 1023]].abs().max()) < 0.3  # far bins are nearly unrelated


def test_loc_init_unties_the_output_layer_and_changes_no_other_input_row(processor, tmp_path):
    model = build_model(processor, SPEC)
    before = model.get_input_embeddings().weight.detach().clone()
    init_loc_embeddings(model, processor.tokenizer)
    first, count = loc_token_range(processor.tokenizer)
    after = model.get_input_embeddings().weight
    assert torch.equal(before[:first], after[:first]) and torch.equal(before[first + count :], after[first + count :])
    assert not torch.equal(before[first : first + count], after[first : first + count])
    assert model.get_output_embeddings().weight.data_ptr() != after.data_ptr()
    assert model.config.tie_word_embeddings is False
    # a plain transformers round trip keeps both layers as they are
    model.save_pretrained(tmp_path)
    reloaded = type(model).from_pretrained(tmp_path)
    assert torch.equal(reloaded.get_output_embeddings().weight, model.get_output_embeddings().weight)
    assert torch.equal(reloaded.get_input_embeddings().weight, after)


def test_untying_a_trained_model_keeps_its_answers(processor):
    """--untie_output on a model trained tied: the same logits, but an output layer of its own that trains apart."""
    model = build_model(processor, SPEC).eval()
    batch = processor(text=["<image>segment heart"], images=[Image.new("RGB", (64, 64), 90)], return_tensors="pt")
    before = model(**batch).logits
    untie_output_embeddings(model)
    assert model.get_output_embeddings().weight.data_ptr() != model.get_input_embeddings().weight.data_ptr()
    assert torch.equal(model(**batch).logits, before)
    with torch.no_grad():
        model.get_output_embeddings().weight[5] += 1.0
    assert not torch.equal(model.get_output_embeddings().weight[5], model.get_input_embeddings().weight[5])


def test_a_loc_input_no_longer_points_at_its_own_output_row(processor):
    """Tied, the previous <loc> scored itself highest (x0 == y0); after init neighbours are alike on both sides, but
    bin k's input embedding is unrelated to bin k's output row."""
    model = build_model(processor, SPEC)
    init_loc_embeddings(model, processor.tokenizer)
    first, count = loc_token_range(processor.tokenizer)
    unit = lambda t: torch.nn.functional.normalize(t.detach().float(), dim=1)  # noqa: E731
    inputs = unit(model.get_input_embeddings().weight[first : first + count])
    outputs = unit(model.get_output_embeddings().weight[first : first + count])
    assert inputs[500] @ inputs[501] > inputs[500] @ inputs[520] > inputs[500] @ inputs[700]
    assert outputs[500] @ outputs[501] > outputs[500] @ outputs[520] > outputs[500] @ outputs[700]
    assert float((inputs * outputs).sum(1).abs().mean()) < 0.2
    scores = inputs[[100, 300, 700]] @ outputs.T  # a hidden state that is just the previous <loc>'s embedding
    assert all(abs(int(s.argmax()) - k) > 10 for s, k in zip(scores, (100, 300, 700), strict=True))


def test_ordered_loc_rows_let_the_model_be_confident_about_one_bin(processor):
    """At the usual 0.02 scale no hidden state could give a <loc> more than a few per cent; after init one can."""
    model = build_model(processor, SPEC)
    first, count = loc_token_range(processor.tokenizer)
    width = model.get_input_embeddings().weight.shape[1]
    rows_before = model.get_output_embeddings().weight[first : first + count].detach().clone()
    init_loc_embeddings(model, processor.tokenizer)
    rows = model.get_output_embeddings().weight[first : first + count].detach()

    def mass_near_300(table):  # of a unit-rms hidden state (a final RMS norm's output) aligned with bin 300's row
        hidden = torch.nn.functional.normalize(table[300], dim=0) * width**0.5
        return float((table @ hidden).softmax(0)[290:311].sum())  # within 10 bins (1 % of the image)

    assert mass_near_300(rows_before) < 0.1
    assert mass_near_300(rows) > 0.8


def _one_answer_batch(processor, bin_value: int):
    """A batch whose only answer is one <loc> token, and a model whose logits put all mass on bin ``bin_value``."""
    first, _ = loc_token_range(processor.tokenizer)
    labels = torch.full((1, 4), -100)
    labels[0, 2] = first + 500

    class Fixed(torch.nn.Module):
        def forward(self, logits_to_keep, **_):
            logits = torch.full((1, len(logits_to_keep), 1794), -30.0)
            logits[..., first + bin_value] = 30.0
            return type("Out", (), {"logits": logits})()

    return Fixed(), {"labels": labels, "input_ids": torch.zeros(1, 4, dtype=torch.long)}


def test_soft_targets_make_a_near_miss_cheaper_than_a_far_one(processor):
    smoothing = loc_smoothing(processor.tokenizer, 8.0)
    losses = {}
    for guess in (500, 504, 530, 900):
        model, batch = _one_answer_batch(processor, guess)
        losses[guess] = float(answer_only_loss(model, batch, smoothing))
    assert losses[500] < losses[504] < losses[530] < losses[900]
    hard = {g: float(answer_only_loss(*_one_answer_batch(processor, g))) for g in (504, 900)}
    assert hard[504] == pytest.approx(hard[900])  # a hard target cannot tell the near miss from the far one
    assert loc_smoothing(processor.tokenizer, 0) is None
    with pytest.raises(ValueError, match="loc_sigma"):
        LocSmoothing(0, 1024, float("nan"))


def test_tower_pretraining_learns_starts_sft_and_is_recorded(phantom_corpus, tmp_path):
    from trl import SFTConfig

    from train.sft import AnatomyArguments, train
    from train.vision_pretrain import TowerSegmenter, VisionPretrainConfig, pretrain, tower_of

    tower_dir = tmp_path / "tower"
    config = VisionPretrainConfig(corpus_dir=str(phantom_corpus), output_dir=str(tower_dir), image_size=64,
                                  vision_layers=1, text_layers=1, hidden=64, heads=2, max_steps=40, batch_size=2,
                                  learning_rate=3e-3, save_steps=20, logging_steps=1, num_workers=0)  # fmt: skip
    history = pretrain(config)
    assert history["step"] == 40 and not (tower_dir / "checkpoint.pt").exists()
    losses = [h["loss"] for h in json.loads((tower_dir / "training_metrics.json").read_text())]
    assert np.mean(losses[-8:]) < np.mean(losses[:8])
    segmenter = TowerSegmenter(tower_dir)
    predictions = segmenter.segment(np.zeros((80, 80), np.uint8), ["heart"])
    assert predictions["heart"].mask.shape == (80, 80)
    random_tower = tower_of(build_model(build_processor(config.spec()), config.spec()))
    trained = AutoModelForImageTextToText.from_pretrained(tower_dir)
    assert not torch.equal(tower_of(trained).embeddings.patch_embedding.weight,
                           random_tower.embeddings.patch_embedding.weight)  # fmt: skip
    # the VLM starts from the folder with the tower frozen and the projector trained
    out = tmp_path / "vlm"
    args = AnatomyArguments(model_name_or_path=str(tower_dir), corpus_dir=str(phantom_corpus), lora=False,
                            train_vision=False, train_projector=True, loc_init=True, loc_sigma=8.0)  # fmt: skip
    train(args, SFTConfig(output_dir=str(out), max_steps=1, per_device_train_batch_size=2, report_to="none",
                          use_cpu=True, bf16=False))  # fmt: skip
    vlm = AutoModelForImageTextToText.from_pretrained(out)
    assert torch.equal(tower_of(vlm).embeddings.patch_embedding.weight,
                       tower_of(trained).embeddings.patch_embedding.weight)  # fmt: skip
    record = read_training_record(out)
    assert [s.trainer for s in record.stages()] == ["train.vision_pretrain", "train.sft"]
    assert record.from_scratch() and record.frozen == ["vision tower"]
    # a tower that already answers goes on learning to see; the language model stays, the projector is re-fitted
    again = tmp_path / "again"
    history = pretrain(replace(config, output_dir=str(again), init_from=str(out), max_steps=4, projector_images=8,
                               image_size=999))  # fmt: skip
    assert history["step"] == 4
    continued = AutoModelForImageTextToText.from_pretrained(again)
    for name, value in vlm.model.language_model.state_dict().items():
        assert torch.equal(continued.model.language_model.state_dict()[name], value), name
    assert not torch.equal(tower_of(continued).embeddings.patch_embedding.weight,
                           tower_of(vlm).embeddings.patch_embedding.weight)  # fmt: skip
    assert not torch.equal(continued.model.multi_modal_projector.linear.weight,
                           vlm.model.multi_modal_projector.linear.weight)  # fmt: skip
    record = read_training_record(again)
    assert [s.trainer for s in record.stages()] == ["train.vision_pretrain", "train.sft", "train.vision_pretrain"]
    assert record.start == str(out) and record.image_size == 64  # the folder's size, not the option's
    fit = record.outcome["projector_fit"]
    assert 0 < fit["r2"] <= 1 and fit["r2"] >= fit["r2_unchanged"] and fit["tokens"] == 8 * 16
    assert (again / "mask_codec").is_dir()
    from model_card.recipe import stage_summary, vision_tower_row

    assert f"re-fitted to it (least squares, R^2 {fit['r2']:.2f})" in stage_summary(record)
    assert vision_tower_row(record)[1].endswith("then frozen (stage 2), then pre-trained as a dense predictor of "
                                                 "every structure (stage 3)")  # fmt: skip
    with pytest.raises(FileNotFoundError, match="init_from"):
        pretrain(replace(config, output_dir=str(tmp_path / "x"), init_from=str(tmp_path / "typo")))


class _FakeTower:
    """Stands in for a SigLIP tower: returns the given tokens [B, N, D] whatever the pixels."""

    def __init__(self, tokens):
        self.tokens = tokens

    def __call__(self, pixel_values):
        from types import SimpleNamespace

        return SimpleNamespace(last_hidden_state=self.tokens)


def test_position_readability_tells_tokens_that_know_where_they_are_from_tokens_that_do_not():
    from train.vision_pretrain import position_readability

    g, d, b = 4, 16, 6
    index = torch.arange(g * g)
    where = torch.stack([index // g, index % g], dim=1).float()  # row, column
    mixing = torch.randn(2, d)
    knowing = (where @ mixing).expand(b, -1, -1) + 0.01 * torch.randn(b, g * g, d)
    readable = position_readability(_FakeTower(knowing), torch.zeros(b, 3, 8, 8))
    assert readable["row"] > 0.99 and readable["column"] > 0.99
    lost = position_readability(_FakeTower(torch.randn(b, g * g, d)), torch.zeros(b, 3, 8, 8))
    assert lost["row"] < 0.5 and lost["column"] < 0.5
    with pytest.raises(ValueError, match="too few"):
        position_readability(_FakeTower(knowing[:2]), torch.zeros(2, 3, 8, 8))


def test_the_position_reader_learns_rows_and_columns_and_is_saved_with_the_head(tmp_path):
    from train.vision_pretrain import PixelHead, load_pixel_head, save_pixel_head

    g, d = 4, 16
    index = torch.arange(g * g)
    tokens = torch.cat([F.one_hot(index // g, g), F.one_hot(index % g, g)], dim=1).float()  # [N, 2g]: row, column
    tokens = torch.cat([tokens, torch.zeros(g * g, d - 2 * g)], dim=1).expand(2, -1, -1)
    head = PixelHead(d, 2, ["heart"])
    with pytest.raises(ValueError, match="no position reader"):
        head.position_loss(tokens)
    head.add_position(g)
    guessing = float(head.position_loss(tokens))
    assert abs(guessing - np.log(g)) < 0.5
    optimiser = torch.optim.Adam(head.parameters(), lr=0.1)
    for _ in range(100):
        optimiser.zero_grad()
        head.position_loss(tokens).backward()
        optimiser.step()
    assert float(head.position_loss(tokens)) < 0.05
    with pytest.raises(ValueError, match="4 x 4 tokens"):
        head.position_loss(tokens[:, :9])
    save_pixel_head(head, tmp_path / "head.safetensors")
    loaded = load_pixel_head(tmp_path / "head.safetensors")
    assert torch.equal(loaded.position.weight, head.position.weight)
    assert float(loaded.position_loss(tokens)) == pytest.approx(float(head.position_loss(tokens)))
    save_pixel_head(PixelHead(d, 2, ["heart"]), tmp_path / "plain.safetensors")
    assert load_pixel_head(tmp_path / "plain.safetensors").position is None


def test_tower_pretraining_with_a_position_weight_keeps_tokens_placed(phantom_corpus, tmp_path):
    """--position_weight: the position loss is logged and falls, and the head is saved with its reader."""
    from train.vision_pretrain import VisionPretrainConfig, load_pixel_head, pretrain

    out = tmp_path / "tower"
    pretrain(VisionPretrainConfig(corpus_dir=str(phantom_corpus), output_dir=str(out), image_size=64,
                                  vision_layers=1, text_layers=1, hidden=64, heads=2, max_steps=60, batch_size=2,
                                  learning_rate=3e-3, logging_steps=1, num_workers=0, position_weight=1.0))  # fmt: skip
    history = json.loads((out / "training_metrics.json").read_text())
    position = [h["position_loss"] for h in history]
    assert len(position) == 60 and np.mean(position[-10:]) < 0.8 * np.log(4) < np.mean(position[:3])  # 4 x 4 grid
    assert load_pixel_head(out).position.out_features == 2 * 4  # 64 px / 16 px patches: a 4 x 4 grid
    with pytest.raises(ValueError, match="position_weight"):
        VisionPretrainConfig(position_weight=-1.0)


def test_a_refitted_projector_restores_what_the_language_model_read():
    """Same tower: the fit is exact. A changed tower: the fit reads it better than the old projector does."""
    import copy

    from train.vision_pretrain import fit_projector

    spec = TinySpec(image_size=32, vision_layers=1, text_layers=1, hidden=32, heads=2)
    model = build_model(build_processor(spec), spec).model.eval()
    before = copy.deepcopy(model)
    pixels = [torch.rand(4, 3, 32, 32) * 2 - 1 for _ in range(3)]
    torch.nn.init.normal_(model.multi_modal_projector.linear.weight)  # a projector that has lost its way
    assert fit_projector(model, before, iter(pixels))["r2"] == pytest.approx(1.0, abs=1e-4)
    with torch.no_grad():
        for p in model.vision_tower.encoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    fit = fit_projector(model, before, iter(pixels))
    assert fit["r2"] > fit["r2_unchanged"] and fit["r2"] > 0.5


def test_tower_pretraining_resumes_from_its_checkpoint(phantom_corpus, tmp_path, monkeypatch):
    """A run killed after its step-2 checkpoint, started again, ends with the weights of a run never killed."""
    import train.vision_pretrain as vp

    small = dict(corpus_dir=str(phantom_corpus), image_size=64, vision_layers=1, text_layers=1, hidden=64, heads=2,
                 batch_size=2, save_steps=2, max_steps=4, num_workers=0)  # fmt: skip
    vp.pretrain(vp.VisionPretrainConfig(output_dir=str(tmp_path / "whole"), **small))
    calls, augment = [], vp.augment_radiograph

    def killed_in_step_3(*args):
        calls.append(1)
        if len(calls) > 4:  # two images per step
            raise KeyboardInterrupt
        return augment(*args)

    monkeypatch.setattr(vp, "augment_radiograph", killed_in_step_3)
    with pytest.raises(KeyboardInterrupt):
        vp.pretrain(vp.VisionPretrainConfig(output_dir=str(tmp_path / "killed"), **small))
    assert (tmp_path / "killed" / vp.CHECKPOINT).is_file()
    monkeypatch.setattr(vp, "augment_radiograph", augment)
    vp.pretrain(vp.VisionPretrainConfig(output_dir=str(tmp_path / "killed"), **small))
    whole = vp.tower_of(AutoModelForImageTextToText.from_pretrained(tmp_path / "whole")).state_dict()
    resumed = vp.tower_of(AutoModelForImageTextToText.from_pretrained(tmp_path / "killed")).state_dict()
    for name, value in whole.items():
        torch.testing.assert_close(resumed[name], value, rtol=1e-5, atol=1e-6)


def test_the_card_lists_the_loc_prior_of_every_stage():
    from types import SimpleNamespace

    from model_card.recipe import loc_prior_rows

    stages = [
        SimpleNamespace(options={"anatomy": {"loc_init": False, "loc_sigma": 0.0}}),
        SimpleNamespace(options={"anatomy": {"untie_output": True, "loc_sigma": 6.0}}),
    ]
    rows = loc_prior_rows(SimpleNamespace(stages=lambda: stages))
    expected = "output layer untied from the input embeddings, soft <loc> targets (Gaussian, 6 bins)"
    assert rows == [("<loc> prior", expected)]


def test_the_card_says_how_each_stage_drew_its_structures():
    """Per answer stage, grouped; a tower pre-training stage draws no answers and is left out."""
    from types import SimpleNamespace

    from model_card.recipe import structure_sampling_row

    def record(*powers):
        stages = [SimpleNamespace(trainer="train.vision_pretrain", options={}) if p == "tower" else
                  SimpleNamespace(trainer="train.sft", options={"anatomy": {} if p is None else {"area_power": p}})
                  for p in powers]  # fmt: skip
        return SimpleNamespace(stages=lambda: stages)

    assert structure_sampling_row(record(None, 0.0)) == ("structure sampling", "uniform")
    assert structure_sampling_row(record(1.0)) == ("structure sampling", "weighted by area fraction ^ 1")
    assert structure_sampling_row(record(None, 0.5)) == (
        "structure sampling",
        "uniform (stage 1), then weighted by area fraction ^ 0.5 (stage 2)",
    )
    assert structure_sampling_row(record("tower")) == ("structure sampling", "none")  # a tower folder: no answers
    assert structure_sampling_row(record(None, 0.0, "tower", 1.0)) == (
        "structure sampling",
        "uniform (stages 1-2), then weighted by area fraction ^ 1 (stage 4)",
    )


def test_the_card_states_each_answer_stage_s_augmentation_and_no_range_it_did_not_record():
    from types import SimpleNamespace

    from model_card.recipe import augmentation_row

    def stage(trainer="train.sft", **anatomy):
        return SimpleNamespace(trainer=trainer, options={"anatomy": anatomy})

    def record(*stages):
        return SimpleNamespace(stages=lambda: list(stages))

    old = stage(augment_fraction=0.3)  # an old record: only the share was written down
    framed = stage(augment_fraction=0.9, augment_zoom=[0.6, 1.15], augment_rotation=10.0, augment_shift=0.08,
                   augment_aspect=[1.0, 1.0])
    stretched = stage(**{**framed.options["anatomy"], "augment_aspect": [0.8, 1.2]})
    bent = stage(**{**framed.options["anatomy"], "augment_deform": 0.03})
    assert augmentation_row(record(bent))[1].endswith("of the side, smooth deformation +-0.03 of the side)")
    assert augmentation_row(record(old)) == ("augmentation", "30 % of the answers")
    assert augmentation_row(record(stage(augment_fraction=0.0))) == ("augmentation", "none")
    _, words = augmentation_row(record(old, stage("train.vision_pretrain"), framed, stretched))
    assert words == ("30 % of the answers (stage 1), then 90 % of the answers (zoom 0.6-1.15, rotation +-10 degrees, "
                     "shift +-0.08 of the side) (stage 3), then 90 % of the answers (zoom 0.6-1.15, rotation +-10 "
                     "degrees, shift +-0.08 of the side, vertical stretch 0.8-1.2) (stage 4)")


def test_the_unet_card_states_the_stretch_and_deformation_its_stages_recorded():
    from types import SimpleNamespace

    from model_card.recipe import unet_augmentation_row

    def stage(**options):
        return SimpleNamespace(trainer="train.unet", options=options)

    def record(*stages):
        return SimpleNamespace(stages=lambda: list(stages))

    assert unet_augmentation_row(record(stage(), stage()))[1] == "none"  # records before the options
    plain, bent = stage(augment_aspect=[1.0, 1.0]), stage(augment_aspect=[0.8, 1.25], augment_deform=0.05)
    assert unet_augmentation_row(record(stage(), plain, bent))[1] == (
        "radiograph augmentation (stage 2), then radiograph augmentation with vertical stretch 0.8-1.25, smooth "
        "deformation +-0.05 of the side (stage 3)"
    )


def test_the_card_says_what_each_stage_did_to_the_vision_tower():
    from types import SimpleNamespace

    from model_card.recipe import vision_tower_row

    def stage(trainer, frozen):
        return SimpleNamespace(trainer=trainer, frozen=frozen, options={})

    def record(*stages):
        return SimpleNamespace(stages=lambda: list(stages))

    sft, frozen_sft = stage("train.sft", []), stage("train.sft", ["vision tower"])
    tower = stage("train.vision_pretrain", ["language model"])
    assert vision_tower_row(record(sft, sft)) == ("vision tower", "trained")
    assert vision_tower_row(record(tower, frozen_sft)) == (
        "vision tower", "pre-trained as a dense predictor of every structure (stage 1), then frozen (stage 2)")
    assert vision_tower_row(record(sft, sft, tower, frozen_sft))[1].startswith("trained (stages 1-2), then pre-trained")
    joint = SimpleNamespace(trainer="train.sft", frozen=[],
                            options={"anatomy": {"train_vision": True, "vision_lr_scale": 0.3, "dense_weight": 1.0}})
    assert vision_tower_row(record(tower, frozen_sft, joint))[1].endswith(
        "then frozen (stage 2), then trained at 0.3 x the learning rate with its dense pre-training loss kept on at "
        "weight 1 (stage 3)")
    placed = SimpleNamespace(trainer="train.sft", frozen=[], options={"anatomy": {
        "train_vision": True, "vision_lr_scale": 1.0, "dense_weight": 1.0, "position_weight": 0.5}})
    assert vision_tower_row(record(tower, joint, placed))[1].endswith(
        "then trained with its dense pre-training loss kept on at weight 1 and each token taught its own position at "
        "weight 0.5 (stage 3)")
    placed_tower = SimpleNamespace(trainer="train.vision_pretrain", frozen=[], options={"position_weight": 2.0})
    assert vision_tower_row(record(placed_tower, frozen_sft))[1].startswith(
        "pre-trained as a dense predictor of every structure and of each token's own position (weight 2) (stage 1)")


def test_the_card_says_how_deep_the_language_model_was_at_each_stage():
    from types import SimpleNamespace

    from model_card.recipe import language_model_row

    def stage(grow=0, trainer="train.sft"):
        return SimpleNamespace(trainer=trainer, frozen=[], options={"anatomy": {"grow_text_layers": grow}})

    stages = [stage(), stage(), SimpleNamespace(trainer="train.vision_pretrain", frozen=[], options={}), stage(4)]
    record = SimpleNamespace(stages=lambda: stages)
    assert language_model_row(record, 8) == ("language model", "4 layers (stages 1-3), then grown from 4 to 8 layers "
                                                               "by gated copies of its layers (stage 4)")
    plain = SimpleNamespace(stages=lambda: stages[:2])
    assert language_model_row(plain, 4) == ("language model", "4 layers")


def test_conditioning_the_projector_changes_no_image_token():
    """The weight along the one direction a LayerNorm'd token never has goes; what the language model reads stays."""
    from train.vision_pretrain import condition_projector

    spec = TinySpec(image_size=32, vision_layers=1, text_layers=1, hidden=32, heads=2)
    model = build_model(build_processor(spec), spec).model.eval()
    with torch.no_grad():
        norm = model.vision_tower.post_layernorm
        norm.weight.uniform_(0.5, 1.5), norm.bias.normal_()
        linear = model.multi_modal_projector.linear
        linear.weight.add_(1e3 * torch.outer(torch.randn(linear.out_features), 1 / norm.weight))  # what a fit can leave
        pixels = torch.rand(2, 3, 32, 32) * 2 - 1
        before = model.get_image_features(pixel_values=pixels).pooler_output.double()
        result = condition_projector(model)
        after = model.get_image_features(pixel_values=pixels).pooler_output.double()
    assert result["before"] > 1e4 and result["after"] < 50
    torch.testing.assert_close(after, before, atol=2e-2 * before.abs().mean().item(), rtol=0)
    assert (after - before).abs().max() < 0.05 * before.abs().max()


def test_a_refitted_projector_has_no_weight_along_the_null_direction():
    import copy

    from train.vision_pretrain import fit_projector

    spec = TinySpec(image_size=32, vision_layers=1, text_layers=1, hidden=32, heads=2)
    model = build_model(build_processor(spec), spec).model.eval()
    before = copy.deepcopy(model)
    with torch.no_grad():
        for p in model.vision_tower.encoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    fit_projector(model, before, iter([torch.rand(4, 3, 32, 32) * 2 - 1 for _ in range(2)]))
    weight, n = model.multi_modal_projector.linear.weight, 1 / model.vision_tower.post_layernorm.weight
    assert (weight @ n).abs().max() < 1e-3 * weight.norm()


def test_answer_training_can_keep_the_tower_seeing(phantom_corpus, tmp_path):
    """--dense_weight: the tower trains on answers and on its dense loss (logged), at --vision_lr_scale x the lr; the
    pixel head trains too and is kept beside every checkpoint and in the output; a resumed run goes on (grown by
    --grow_text_layers before its checkpoint is restored)."""
    from trl import SFTConfig

    from train.sft import AnatomyArguments, build_trainer, train
    from train.vision_pretrain import HEAD_FILE, VisionPretrainConfig, load_pixel_head, pretrain, tower_of

    tower_dir = tmp_path / "tower"
    pretrain(VisionPretrainConfig(corpus_dir=str(phantom_corpus), output_dir=str(tower_dir), image_size=64,
                                  vision_layers=1, text_layers=1, hidden=64, heads=2, max_steps=2, batch_size=2,
                                  num_workers=0))  # fmt: skip
    args = AnatomyArguments(model_name_or_path=str(tower_dir), corpus_dir=str(phantom_corpus), lora=False,
                            train_vision=True, dense_weight=1.0, position_weight=1.0,
                            vision_lr_scale=0.1, grow_text_layers=1)  # fmt: skip

    def sft(steps):
        return SFTConfig(output_dir=str(tmp_path / "vlm"), max_steps=steps, per_device_train_batch_size=2,
                         learning_rate=1e-3, save_steps=1, logging_steps=1, report_to="none", use_cpu=True,
                         bf16=False, lr_scheduler_type="constant")  # fmt: skip

    trainer, _ = build_trainer(args, sft(2))
    optimiser = trainer.create_optimizer()
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    rates = {("tower" if "vision_tower" in names.get(id(g["params"][0]), "") else
              "head" if g["params"][0] is trainer.dense.head.proj.weight else "rest"): g["lr"]
             for g in optimiser.param_groups}  # fmt: skip
    assert rates["tower"] == pytest.approx(1e-4) and rates["rest"] == rates["head"] == pytest.approx(1e-3)

    out = train(args, sft(2))
    logged = [h for h in json.loads((out / "training_metrics.json").read_text()) if "loss" in h]
    assert len(logged) == 2 and all(h["dense_loss"] > 0 and h["position_loss"] > 0 for h in logged)
    assert (out / HEAD_FILE).is_file() and (out / "checkpoint-1" / HEAD_FILE).is_file()
    start = load_pixel_head(tower_dir)
    assert start.position is None and load_pixel_head(out / "checkpoint-1").position is not None
    assert not torch.equal(load_pixel_head(out).proj.weight, start.proj.weight)
    patches = [tower_of(AutoModelForImageTextToText.from_pretrained(f)).embeddings.patch_embedding.weight
               for f in (tower_dir, out)]  # fmt: skip
    assert not torch.equal(*patches)
    assert json.loads((out / "config.json").read_text())["text_config"]["num_hidden_layers"] == 2
    train(args, sft(3))  # resumes from checkpoint-2, head included
    assert json.loads((out / "checkpoint-3" / "trainer_state.json").read_text())["global_step"] == 3
    record = read_training_record(out)
    assert record.stages()[-1].options["anatomy"]["dense_weight"] == 1.0


def test_a_published_folder_without_a_pixel_head_continues_with_a_fitted_one(phantom_corpus, tmp_path, monkeypatch,
                                                                             capsys):
    """A published model carries no pixel head: --dense_weight alone says how to go on; --dense_head fit fits a new
    head on the frozen tower (its loss falls, the tower unchanged) before the first step, and the run trains."""
    from trl import SFTConfig

    import train.dense_aux as dense_aux
    from train.sft import AnatomyArguments, build_trainer, train
    from train.vision_pretrain import HEAD_FILE, VisionPretrainConfig, load_pixel_head, pretrain, tower_of

    published = tmp_path / "published"
    pretrain(VisionPretrainConfig(corpus_dir=str(phantom_corpus), output_dir=str(published), image_size=64,
                                  vision_layers=1, text_layers=1, hidden=64, heads=2, max_steps=1, batch_size=2,
                                  num_workers=0))  # fmt: skip
    (published / HEAD_FILE).unlink()
    sft = SFTConfig(output_dir=str(tmp_path / "vlm"), max_steps=1, per_device_train_batch_size=2, learning_rate=1e-3,
                    save_steps=1, logging_steps=1, report_to="none", use_cpu=True, bf16=False)  # fmt: skip
    options = dict(model_name_or_path=str(published), corpus_dir=str(phantom_corpus), lora=False, train_vision=True,
                   dense_weight=1.0, position_weight=1.0)  # fmt: skip
    with pytest.raises(FileNotFoundError, match="--dense_head fit"):
        build_trainer(AnatomyArguments(**options), sft)

    trainer, _ = build_trainer(AnatomyArguments(**options, dense_head="fit"), sft)
    tower = tower_of(trainer.model)
    before = {k: v.clone() for k, v in tower.state_dict().items()}
    losses = trainer.dense.fit_head(tower, steps=40)
    assert losses[-1] < 0.8 * losses[0] and not trainer.dense.unfitted
    assert all(torch.equal(before[k], v) for k, v in tower.state_dict().items())

    monkeypatch.setattr(dense_aux, "FIT_STEPS", 5)
    capsys.readouterr()
    out = train(AnatomyArguments(**options, dense_head="fit"), sft)
    assert "pixel head fitted on the tower" in capsys.readouterr().out  # before the first step, as the user reads
    assert (out / HEAD_FILE).is_file() and load_pixel_head(out).position is not None
    logged = [h for h in json.loads((out / "training_metrics.json").read_text()) if "loss" in h]
    assert logged and logged[0]["dense_loss"] > 0


@pytest.mark.parametrize(
    "options, message",
    [(dict(dense_weight=1.0), "--train_vision true"), (dict(dense_weight=-1.0, train_vision=True), "dense_weight"),
     (dict(vision_lr_scale=0.0, train_vision=True), "vision_lr_scale"),
     (dict(position_weight=1.0, train_vision=True), "set --dense_weight too"),
     (dict(position_weight=float("nan"), dense_weight=1.0, train_vision=True), "position_weight"),
     (dict(grow_text_layers=-1), "grow_text_layers"), (dict(grow_text_layers=2, lora=True), "--lora false")],
)  # fmt: skip
def test_dense_options_that_cannot_work_are_refused(options, message):
    from train.sft import AnatomyArguments

    with pytest.raises(ValueError, match=message):
        AnatomyArguments(model_name_or_path="x", **{"lora": False, **options})


def test_a_grown_language_model_answers_as_before_and_its_new_layers_learn(processor, tmp_path):
    """--grow_text_layers: gated copies leave every logit and every generated answer as they were, survive a
    save/load as a plain PaliGemma, and open under the first optimiser step."""
    from train.grow import grow_text_layers, growth_sources

    spec = replace(SPEC, text_layers=2)
    model = build_model(processor, spec).eval()
    with torch.no_grad():  # trained-looking norms, so a copy is not an identity by accident
        for name, p in model.named_parameters():
            if "layernorm" in name and "language_model" in name:
                p.normal_(0, 0.5)
    prompts = ["segment left lung", "detect heart ; aorta"]
    images = [np.random.default_rng(i).integers(0, 255, (64, 64, 3), dtype=np.uint8) for i in range(2)]
    inputs = processor(text=[f"<image>{p}" for p in prompts], images=images, return_tensors="pt", padding="longest")
    contract = AnswerContract.for_prompts(processor.tokenizer, prompts, inputs["input_ids"].shape[1])

    def logits_and_answers(m):
        with torch.no_grad():
            logits = m(**inputs).logits
            answers = m.generate(**inputs, logits_processor=LogitsProcessorList([contract]),
                                 max_new_tokens=contract.max_new_tokens, do_sample=False)  # fmt: skip
        return logits, answers

    before = logits_and_answers(model)
    assert grow_text_layers(model, 2) == [1, 3]
    assert model.config.text_config.layer_types == ["sliding_attention"] * 2 + ["full_attention"] * 2
    grown = logits_and_answers(model)
    torch.testing.assert_close(grown[0], before[0], rtol=0, atol=1e-5)
    assert torch.equal(grown[1], before[1])
    model.save_pretrained(tmp_path)
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert loaded.config.text_config.num_hidden_layers == 4
    torch.testing.assert_close(logits_and_answers(loaded)[0], before[0], rtol=0, atol=1e-5)

    model.train()
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    model(**inputs).logits[..., :50].logsumexp(-1).mean().backward()
    gates = [model.model.language_model.layers[i].post_feedforward_layernorm.weight for i in (1, 3)]
    assert all(g.grad.abs().sum() > 0 for g in gates)
    optimiser.step()
    assert all((g > -1).any() for g in gates)
    model.eval()
    assert not torch.allclose(logits_and_answers(model)[0], before[0], atol=1e-3)
    with pytest.raises(ValueError, match="1 to 2"):
        growth_sources(2, 3)
