"""PaliGemma fine-tuning on CPU with the tiny model.

Collator masks, LoRA steps, save/load/generate, resume, upload set.
"""

import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub.utils import filter_repo_objects
from transformers import AutoModelForImageTextToText, AutoProcessor, TrainerCallback
from trl import SFTConfig

from chexanatomy.anatomy import STRUCTURES
from chexanatomy.codec import default_tokenizer
from chexanatomy.finetune import answer_only_loss, answer_positions
from chexanatomy.publish import push_folder
from chexanatomy.training_record import read_training_record
from train.collator import AnatomyCollator
from train.sft import AnatomyArguments, _last_checkpoint, build_trainer, train
from train.tiny_paligemma import TinySpec, build_model, build_processor

SPEC = TinySpec(image_size=64, vision_layers=1, text_layers=1, hidden=64, heads=2)


class StepCounter(TrainerCallback):
    steps = 0

    def on_step_end(self, args, state, control, **kwargs):
        self.steps += 1


def sft_config(out: Path, **kw) -> SFTConfig:
    base = dict(output_dir=str(out), max_steps=2, per_device_train_batch_size=2, learning_rate=1e-2, bf16=False,
                report_to="none", save_steps=100, logging_steps=1, seed=0, use_cpu=True)  # fmt: skip
    return SFTConfig(**{**base, **kw})


def test_collator_puts_only_the_answer_and_eos_in_the_loss(phantom_rows):
    processor = build_processor(SPEC)
    collator = AnatomyCollator(processor, default_tokenizer(), structures_per_sample=3, augment_fraction=0.0, seed=0)
    batch = collator([phantom_rows[0], phantom_rows[1]])
    tok = processor.tokenizer
    for i in range(2):
        answer = batch["token_type_ids"][i] == 1
        assert torch.equal(answer, batch["labels"][i] != -100)
        assert (batch["input_ids"][i][~answer] == processor.image_token_id).sum() == (SPEC.image_size // 16) ** 2
        labelled = batch["labels"][i][answer]
        assert labelled[-1] == tok.eos_token_id and (labelled[:-1] != tok.eos_token_id).all()
        prompt_ids = batch["input_ids"][i][(~answer) & (batch["attention_mask"][i] == 1)]
        prompt = tok.decode(prompt_ids, skip_special_tokens=True)
        text = tok.decode(labelled[:-1])
        task, names = prompt.strip().split(" ", 1)
        assert task in ("segment", "detect")
        for name in names.split(" ; "):  # the answer names exactly the prompted structures
            assert f"> {name}" in text
        if task == "segment":
            assert text.count("<seg") == 16 * len(names.split(" ; "))


def test_answer_only_loss_equals_the_full_loss(phantom_rows):
    processor = build_processor(SPEC)
    model = build_model(processor, SPEC).eval()
    collator = AnatomyCollator(processor, default_tokenizer(), structures_per_sample=4, augment_fraction=0.0, seed=2)
    batch = collator([phantom_rows[0], phantom_rows[1], phantom_rows[0]])
    full = model(**batch).loss
    keep = answer_positions(batch["labels"])
    lengths = batch["attention_mask"].sum(1)
    # logits only where some row has an answer token: at most the longest answer plus the padding offset
    assert len(keep) <= int(batch["token_type_ids"].sum(1).max() + lengths.max() - lengths.min())
    torch.testing.assert_close(answer_only_loss(model, batch), full, rtol=1e-5, atol=1e-5)


def test_augmented_answers_decode_to_the_moved_masks(phantom_rows):
    processor = build_processor(SPEC)
    tok = default_tokenizer()
    row = phantom_rows[0]
    original = np.asarray(row["image"].convert("L"))
    changed = 0
    for seed in range(4):
        collator = AnatomyCollator(
            processor, tok, structures_per_sample=50, augment_fraction=1.0, detect_fraction=0.0, seed=seed
        )
        sample = collator.make_sample(row)
        objects = tok.decode(sample.answer, (64, 64))
        assert objects and all(o.valid for o in objects)
        changed += not np.array_equal(np.asarray(sample.image.convert("L")), original)
    assert changed >= 3  # geometry (p 0.7) or style (p 0.8) nearly always applies


def test_the_augmentation_ranges_are_options_of_the_answer_training(phantom_rows):
    """--augment_zoom 0.5 0.5: every answered box is half its size, about the centre (where the radiograph went)."""
    from chexanatomy.mask_tokens import decode_detections
    from train.augment import RadiographAugmentation
    from train.sft import AnatomyArguments, augmentation

    args = AnatomyArguments(model_name_or_path="x", lora=False, augment_zoom=[0.5, 0.5], augment_rotation=0.0,
                            augment_shift=0.0)  # fmt: skip
    halved = augmentation(args)
    assert (halved.zoom, halved.max_rotation_deg, halved.max_shift) == ((0.5, 0.5), 0.0, 0.0)
    processor, tok, row = build_processor(SPEC), default_tokenizer(), phantom_rows[0]
    options = dict(structures_per_sample=1, augment_fraction=1.0, detect_fraction=1.0, seed=0)
    plain = AnatomyCollator(processor, tok, **{**options, "augment_fraction": 0.0})
    always = RadiographAugmentation(geometry_p=1.0, zoom=(0.5, 0.5), max_rotation_deg=0.0, max_shift=0.0)
    shrunk = AnatomyCollator(processor, tok, augmentation=always, **options)
    before = decode_detections(plain.make_sample(row).answer, (64, 64))[0]
    after = decode_detections(shrunk.make_sample(row).answer, (64, 64))[0]
    assert before.name == after.name
    width = lambda o: o.box_yxyx[3] - o.box_yxyx[1]  # noqa: E731
    assert width(after) == pytest.approx(width(before) / 2, abs=2)
    centre = lambda o: (o.box_yxyx[1] + o.box_yxyx[3]) / 2 - 32  # noqa: E731  (from the image centre, pixels)
    assert centre(after) == pytest.approx(centre(before) / 2, abs=2)
    for bad in (dict(augment_zoom=[1.2, 0.8]), dict(augment_zoom=[0.9]), dict(augment_shift=1.5)):
        with pytest.raises(ValueError, match="augment"):
            AnatomyArguments(model_name_or_path="x", lora=False, **bad)


def _chosen_names(collator, row, draws: int) -> list[str]:
    """The names of the structures answered in ``draws`` samples of ``row``."""
    answers = [collator.make_sample(row).answer for _ in range(draws)]
    return [part[part.rindex(">") + 1 :].strip() for answer in answers for part in answer.split(" ; ")]


def test_area_power_answers_the_large_structures_more_often(phantom_rows):
    """area_power 1: a structure's share of the answers follows its area; 0 keeps the uniform draw of before."""
    processor = build_processor(SPEC)
    row = phantom_rows[0]
    areas = {STRUCTURES[s["name"]].display: s["area_px"] for s in row["structures"] if s.get("segment_target")}
    largest, smallest = max(areas, key=areas.get), min(areas, key=areas.get)
    assert areas[largest] > 10 * areas[smallest]
    options = dict(structures_per_sample=1, augment_fraction=0.0, detect_fraction=0.0, synonym_fraction=0.0, seed=3)
    weighted = _chosen_names(AnatomyCollator(processor, None, area_power=1.0, **options), row, 400)
    uniform = _chosen_names(AnatomyCollator(processor, None, **options), row, 400)
    assert weighted.count(largest) > 3 * max(uniform.count(largest), 1) / 2
    assert weighted.count(largest) > 4 * weighted.count(smallest)
    reference = random.Random(3)  # area_power 0 is rng.sample, draw for draw (old recipes train as before)
    usable = [s for s in row["structures"] if s.get("segment_target")]
    reference.random()  # the task draw
    reference.randint(1, 1)
    first = reference.sample(usable, 1)[0]["name"]
    assert uniform[0] == STRUCTURES[first].display


def test_area_power_rejects_bad_values_and_corpora_without_areas(phantom_rows):
    processor = build_processor(SPEC)
    with pytest.raises(ValueError, match="area_power"):
        AnatomyCollator(processor, None, area_power=-1.0)
    row = {
        **phantom_rows[0],
        "structures": [{k: v for k, v in s.items() if k != "area_px"} for s in phantom_rows[0]["structures"]],
    }
    with pytest.raises(ValueError, match="area_px"):
        AnatomyCollator(processor, None, area_power=0.5, augment_fraction=0.0).make_sample(row)


def test_two_lora_steps_change_every_lora_parameter(phantom_corpus, tmp_path):
    base = tmp_path / "base"
    processor = build_processor(SPEC)
    build_model(processor, SPEC).save_pretrained(base)
    processor.save_pretrained(base)
    args = AnatomyArguments(model_name_or_path=str(base), corpus_dir=str(phantom_corpus), structures_per_sample=3)
    trainer, _ = build_trainer(args, sft_config(tmp_path / "out"))
    lora = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert lora and all("lora_" in n for n in lora)
    assert not any("vision_tower" in n for n in lora)  # vision frozen, adapters on the language model only
    trainer.train()
    after = dict(trainer.model.named_parameters())
    unchanged = [n for n, v in lora.items() if torch.equal(v, after[n].detach())]
    assert not unchanged, unchanged  # (lora_B starts at 0, so lora_A first moves in step 2)


def test_save_load_generate_identical_and_resume(phantom_corpus, phantom_rows, tmp_path):
    out = tmp_path / "tiny"
    args = AnatomyArguments(
        model_name_or_path="tiny",
        corpus_dir=str(phantom_corpus),
        lora=False,
        train_vision=True,
        structures_per_sample=3,
    )
    train(args, sft_config(out, max_steps=2, save_steps=1))
    processor = AutoProcessor.from_pretrained(out)
    model = AutoModelForImageTextToText.from_pretrained(out).eval()
    image = phantom_rows[0]["image"].convert("RGB")
    inputs = processor(text="<image>segment heart", images=image, return_tensors="pt")
    first = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    reloaded = AutoModelForImageTextToText.from_pretrained(out).eval()
    again = reloaded.generate(**inputs, max_new_tokens=8, do_sample=False)
    assert torch.equal(first, again)
    assert (out / "mask_codec" / "model.safetensors").exists() and (out / "training_config.json").exists()
    assert model.generation_config.max_new_tokens == 512  # a bare generate() finishes an answer (default: 20 tokens)
    # resume: a run with more steps continues from checkpoint-2 and trains only the missing step
    trainer, _ = build_trainer(args, sft_config(out, max_steps=3, save_steps=1))
    counter = StepCounter()
    trainer.add_callback(counter)
    trainer.train(resume_from_checkpoint=_last_checkpoint(str(out)))
    assert counter.steps == 1 and trainer.state.global_step == 3


def test_a_resumed_run_continues_from_the_checkpoints_weights(phantom_corpus, tmp_path):
    """The Trainer's own resume loads none of PaliGemma's keys (saved under the Hub names): train() restores them."""
    out = tmp_path / "tiny"
    args = AnatomyArguments(model_name_or_path="tiny", corpus_dir=str(phantom_corpus), lora=False, train_vision=True,
                            structures_per_sample=3)  # fmt: skip
    train(args, sft_config(out, max_steps=2, save_steps=1))
    trained = AutoModelForImageTextToText.from_pretrained(out / "checkpoint-2").state_dict()
    initial = build_model(build_processor()).state_dict()
    train(args, sft_config(out, max_steps=3, save_steps=1))  # one more step, from checkpoint-2
    final = AutoModelForImageTextToText.from_pretrained(out).state_dict()
    keys = [k for k in final if k in initial]
    to_trained = sum(float((final[k] - trained[k]).norm()) for k in keys)
    to_initial = sum(float((final[k] - initial[k]).norm()) for k in keys)
    assert to_trained < 0.7 * to_initial  # one step from the checkpoint, three from the start


def test_a_continued_run_records_the_stage_it_started_from(phantom_corpus, tmp_path):
    first, second = tmp_path / "stage1", tmp_path / "stage2"
    train(
        AnatomyArguments(model_name_or_path="tiny", corpus_dir=str(phantom_corpus), lora=False, train_vision=True),
        sft_config(first, max_steps=1, save_steps=1),
    )
    train(
        AnatomyArguments(model_name_or_path=str(first), corpus_dir=str(phantom_corpus), lora=False, train_vision=True),
        sft_config(second, max_steps=1, save_steps=1),
    )
    record = read_training_record(second)
    assert record.trainer == "train.sft" and record.start == str(first) and record.steps == 1
    assert record.initialised_from.path == str(first) and record.initialised_from.start == "tiny"
    assert record.initialised_from.initialised_from is None  # stage 1 started from nothing
    assert [s.start for s in record.stages()] == ["tiny", str(first)] and record.from_scratch()


def test_hub_upload_holds_exactly_what_from_pretrained_needs(phantom_corpus, tmp_path):
    out = tmp_path / "tiny"
    train(
        AnatomyArguments(model_name_or_path="tiny", corpus_dir=str(phantom_corpus), lora=False, train_vision=True),
        sft_config(out, max_steps=1, save_steps=1),
    )

    class FakeApi:
        def create_repo(self, *a, **k):
            pass

        def upload_folder(self, folder_path, ignore_patterns, **k):
            local = sorted(str(p.relative_to(folder_path)) for p in Path(folder_path).rglob("*") if p.is_file())
            # upload_folder's own filter
            self.files = list(filter_repo_objects(local, ignore_patterns=ignore_patterns))
            return "ok"

    api = FakeApi()
    push_folder(out, "chexanatomy/tiny-vlm", api=api)
    assert not any(f.startswith("checkpoint") or f.endswith(".bin") for f in api.files)
    needed = {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "processor_config.json",
        "mask_codec/model.safetensors",
    }
    assert needed <= set(api.files)
    mirror = tmp_path / "hub_copy"
    for f in api.files:
        (mirror / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(out / f, mirror / f)
    assert AutoModelForImageTextToText.from_pretrained(mirror) is not None
    assert AutoProcessor.from_pretrained(mirror) is not None


def test_tiny_from_scratch_trains_its_vision_tower(phantom_corpus, tmp_path):
    with pytest.raises(ValueError, match="train_vision"):
        AnatomyArguments(model_name_or_path="tiny", lora=False, train_vision=False)
    args = AnatomyArguments(model_name_or_path="tiny", corpus_dir=str(phantom_corpus), lora=False, train_vision=True)
    trainer, _ = build_trainer(args, sft_config(tmp_path / "out", max_steps=1))
    frozen = [n for n, p in trainer.model.named_parameters() if not p.requires_grad]
    assert not frozen, frozen[:3]  # a randomly initialised vision tower must learn
