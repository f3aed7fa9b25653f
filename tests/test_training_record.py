"""One TrainingRecord for every trainer: it round-trips through training_config.json, reads the shapes older
trainers wrote, and the bundled models' cards are exactly what the card writer renders from their records."""

import json
from pathlib import Path

import pytest

from chexanatomy.results import load_results
from chexanatomy.training_record import (
    TrainingRecord,
    codec_record,
    read_training_record,
    sft_record,
    unet_record,
)
from model_card.card import render_card
from model_card.sections import plot_links

ROOT = Path(__file__).resolve().parents[1]
ANATOMY = {"model_name_or_path": "google/paligemma2-3b-pt-448", "corpus_dir": "chexanatomy/drr", "lora": True,
           "lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "train_vision": False, "structures_per_sample": 20}
SFT = {"learning_rate": 5e-5, "lr_scheduler_type": "linear", "optim": "adamw_torch", "max_steps": -1,
       "num_train_epochs": 3.0, "per_device_train_batch_size": 8, "gradient_accumulation_steps": 4, "bf16": True}
UNET = {"corpus_dir": "outputs/drr", "size": 256, "encoder": "resnet18", "max_steps": 0, "epochs": 40,
        "batch_size": 8, "learning_rate": 0.002, "bf16": False, "init_from": None}  # fmt: skip


def test_a_record_round_trips_through_its_file_with_every_stage(tmp_path):
    first = unet_record(UNET, facts={"corpus_hub_id": None, "corpus_source": "embedded"})
    first.path = "outputs/unet"
    second = unet_record({**UNET, "size": 384, "max_steps": 900, "init_from": "outputs/unet"}, first,
                         head_remapped={"added": ["lung_fields"], "dropped": []})  # fmt: skip
    second.save(tmp_path)
    back = read_training_record(tmp_path)
    assert back.path == str(tmp_path)
    back.path = None
    assert back == second
    assert [s.image_size for s in back.stages()] == [256, 384] and back.stages()[0].path == "outputs/unet"
    assert back.steps == 900 and back.stages()[0].steps is None and back.stages()[0].epochs == 40
    assert back.outcome == {"head_remapped": {"added": ["lung_fields"], "dropped": []}} and back.from_scratch()


def test_the_three_trainers_fill_the_same_fields():
    vlm = sft_record(ANATOMY, SFT, facts={"corpus_hub_id": "chexanatomy/drr", "corpus_source": None})
    assert (vlm.trainer, vlm.start, vlm.steps, vlm.epochs, vlm.batch_size, vlm.gradient_accumulation) == (
        "train.sft", "google/paligemma2-3b-pt-448", None, 3.0, 8, 4)  # fmt: skip
    assert vlm.lora == {"r": 16, "alpha": 32, "dropout": 0.05} and vlm.frozen == ["vision tower"]
    assert vlm.precision == "bf16" and not vlm.from_scratch()
    codec = codec_record({"corpus_dir": "outputs/drr", "steps": 30, "batch_size": 64, "learning_rate": 3e-4},
                         facts={"corpus_hub_id": None, "corpus_source": None}, steps_done=12)  # fmt: skip
    assert codec.trainer == "train.codec" and codec.steps == 30 and codec.outcome == {"steps_done": 12}


def test_a_corpus_is_judged_local_or_hub_when_training_not_when_reading(tmp_path):
    corpus = tmp_path / "drr"
    corpus.mkdir()
    (corpus / "build_config.json").write_text(json.dumps({"source": "embedded"}))
    record = unet_record({**UNET, "corpus_dir": str(corpus)})
    assert record.corpus_hub_id is None and record.corpus_source == "embedded"
    assert unet_record({**UNET, "corpus_dir": "someone/drr"}).corpus_hub_id == "someone/drr"


@pytest.mark.parametrize("old", [
    {"anatomy": ANATOMY, "sft": SFT},
    {**UNET, "push_to_hub": None, "head_remapped": {"added": [], "dropped": []},
     "initialised_from": {"path": "outputs/unet0", **UNET}},
    {"corpus_dir": "outputs/drr", "steps": 30, "batch_size": 64, "learning_rate": 3e-4, "restart_after": 50,
     "steps_done": 30, "masks_in_bank": 9},
], ids=["sft", "unet", "codec"])  # fmt: skip
def test_the_shapes_older_trainers_wrote_are_read(old, tmp_path):
    (tmp_path / "training_config.json").write_text(json.dumps(old))
    record = read_training_record(tmp_path)
    assert record.corpus_dir in ("chexanatomy/drr", "outputs/drr") and record.learning_rate > 0
    assert TrainingRecord.from_dict(record.to_dict()) == record
    if "initialised_from" in old:
        assert record.initialised_from.path == "outputs/unet0" and len(record.stages()) == 2


def test_what_is_no_record_is_a_clear_error():
    with pytest.raises(ValueError, match="not a training record"):
        TrainingRecord.from_dict({"hello": 1})
    with pytest.raises(ValueError, match="unknown training record fields"):
        TrainingRecord.from_dict({**unet_record(UNET).to_dict(), "typo": 1})


@pytest.mark.parametrize("model_id, folder", [("vlm", "tiny_vlm"), ("unet", "unet")])
def test_the_bundled_cards_are_what_their_records_render(model_id, folder):
    """The committed card of each bundled model is regenerated exactly from docs/eval/results.json and its folder,
    whatever corpus folders exist here (the record says the corpus was local)."""
    results = load_results(ROOT / "docs" / "eval" / "results.json")
    path = Path("chexanatomy/assets/models") / folder
    card = render_card(results, model_id, path, None, plots=plot_links(results))
    assert str(card) == (ROOT / path / "README.md").read_text()
