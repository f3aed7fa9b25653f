"""The codec trainer on a tiny phantom corpus: it trains, restarts dead codes, saves a loadable codec."""



import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from chexanatomy.training_record import read_training_record
from chexanatomy.vqvae import MaskVQVAE
from dataset_builder.build import BuildConfig, build
from train.codec import CodecTrainConfig, learning_rate_at, train
from train.codec_data import Augmentation, augmented_batch, load_mask_bank


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("codec_corpus")
    build(
        BuildConfig(source="phantom", output_dir=str(out), num_subjects=3, size_px=64, poses_per_view=1, codec="none")
    )
    return out


def test_mask_bank_skips_multipart_unions(corpus):
    bank = load_mask_bank(corpus, splits=("train", "validation", "test"))
    assert bank.crops.dtype == torch.uint8 and bank.crops.shape[1:] == (128, 128)
    assert "ribs_left" not in bank.names and "rib_left_3" in bank.names and "lung_left" in bank.names


def test_augmented_crops_are_tight_soft_masks(corpus):
    bank = load_mask_bank(corpus, splits=("train", "validation", "test"))
    batch = augmented_batch(bank, 32, Augmentation(), torch.Generator().manual_seed(0), "cpu")
    assert batch.shape[1:] == (64, 64) and 0 <= float(batch.min()) and float(batch.max()) <= 1
    # a tight box: every crop touches all four edges
    edges = torch.stack([batch[:, 0].amax(1), batch[:, -1].amax(1), batch[:, :, 0].amax(1), batch[:, :, -1].amax(1)], 1)
    assert (edges > 0).all()


def test_learning_rate_warms_up_then_decays():
    cfg = CodecTrainConfig(steps=1000, warmup_steps=100, learning_rate=1e-3)
    lrs = [learning_rate_at(s, cfg) for s in range(1000)]
    assert lrs[0] < lrs[50] < lrs[99] == pytest.approx(1e-3) and lrs[-1] < 1e-5


def test_training_changes_every_parameter_and_saves_a_loadable_codec(corpus, tmp_path):
    out = tmp_path / "codec"
    cfg = CodecTrainConfig(
        corpus_dir=str(corpus), output_dir=str(out), steps=3, batch_size=8, log_every=1, device="cpu"
    )
    torch.manual_seed(0)
    before = MaskVQVAE().state_dict()
    metrics = train(cfg)
    after = load_file(out / "model.safetensors")
    for name, value in before.items():
        if name.startswith(("encoder", "decoder")):
            assert not torch.equal(value, after[name]), f"{name} did not change"
    assert not torch.equal(before["quantizer.codebook"], after["quantizer.codebook"])
    codec = MaskVQVAE.from_pretrained(str(out))
    assert codec.encode_indices(torch.rand(2, 64, 64)).shape == (2, 16)
    record = read_training_record(out)
    assert record.trainer == "train.codec" and record.outcome["steps_done"] == 3 and record.outcome["masks_in_bank"] > 0
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3 and metrics["codes_used"] > 1
    assert np.isfinite(metrics["loss"])


def test_push_to_hub_uploads_the_codec_folder_to_hub_model_id(corpus, tmp_path, fake_hub):
    from train.codec import main

    out = tmp_path / "codec"
    argv = ["--corpus_dir", str(corpus), "--output_dir", str(out), "--steps", "1", "--batch_size", "4",
            "--device", "cpu", "--push_to_hub", "true", "--hub_model_id", "me/codec", "--hub_private_repo", "true"]
    assert main(argv) == 0
    assert fake_hub == [("create_repo", "me/codec", True), ("upload_folder", "me/codec", [
        "LICENSE", "README.md", "config.json", "metrics.jsonl", "model.safetensors",
        "training_config.json"])]  # fmt: skip
