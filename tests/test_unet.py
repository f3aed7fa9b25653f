"""The U-Net baseline: it learns on a fixed batch, saves/loads with the Hub mixin, segments at full size."""

import json
import random

import numpy as np
import pytest
import segmentation_models_pytorch as smp
import torch

from chexanatomy.training_record import read_training_record
from train.unet import AnatomyUNet, UNetTrainConfig, default_structures, initial_model, loss_fn, row_tensors, train


def test_targets_follow_the_structure_order_and_augmentation_moves_them_together(phantom_rows):
    structures = default_structures(phantom_rows["structures"])
    assert "lung_left" in structures
    image, target = row_tensors(phantom_rows[0], structures, 64, None)
    lung = target[structures.index("lung_left")]
    assert image.shape == (1, 64, 64) and target.shape == (len(structures), 64, 64)
    stored = next(s["mask"] for s in phantom_rows[0]["structures"] if s["name"] == "lung_left")
    assert torch.equal(lung > 0.5, torch.from_numpy(np.asarray(stored, dtype=bool)))
    image_a, target_a = row_tensors(phantom_rows[0], structures, 64, random.Random(1))
    image_b, target_b = row_tensors(phantom_rows[0], structures, 64, random.Random(1))
    assert torch.equal(target_a, target_b)


def test_a_step_lowers_the_loss_on_a_fixed_batch(phantom_rows):
    torch.manual_seed(0)
    structures = default_structures(phantom_rows["structures"])
    model = AnatomyUNet(structures, size=64)
    # every row_tensors result is an (image, target) pair, so the transposed tuples are equally long
    tensors = [row_tensors(r, structures, 64, None) for r in phantom_rows]
    images, targets = (torch.stack(t) for t in zip(*tensors, strict=True))
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(5):
        loss = loss_fn(model(images), targets)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]


def test_training_saves_a_model_that_segments_at_the_image_size(phantom_corpus, phantom_rows, tmp_path):
    out = tmp_path / "unet"
    train(
        UNetTrainConfig(
            corpus_dir=str(phantom_corpus), output_dir=str(out), size=64, max_steps=2, batch_size=2,
            decoder_channels=[64, 32, 16, 16, 8],
        )
    )  # fmt: skip
    model = AnatomyUNet.from_pretrained(str(out)).eval()
    assert model.structures == default_structures(phantom_rows["structures"])
    assert model.net.segmentation_head[0].in_channels == 8  # the narrow decoder came back from config.json
    image = phantom_rows[0]["image"]
    masks = model.segment_masks(image.resize((80, 80)), ["lung_left", "heart"])
    assert set(masks) == {"lung_left", "heart"} and masks["heart"].shape == (80, 80) and masks["heart"].dtype == bool
    with pytest.raises(KeyError, match="not trained"):
        model.segment_masks(image, ["brain"])


def test_training_continues_from_a_saved_unet_at_another_size(phantom_corpus, phantom_rows, tmp_path):
    first, second = tmp_path / "unet64", tmp_path / "unet96"
    train(UNetTrainConfig(corpus_dir=str(phantom_corpus), output_dir=str(first), size=64, max_steps=1, batch_size=2,
                          decoder_channels=[32, 16, 16, 8, 8]))  # fmt: skip
    train(UNetTrainConfig(corpus_dir=str(phantom_corpus), output_dir=str(second), size=96, max_steps=1, batch_size=2,
                          init_from=str(first)))  # fmt: skip
    model = AnatomyUNet.from_pretrained(str(second))
    assert model.size == 96 and model.net.segmentation_head[0].in_channels == 8  # widths from the saved U-Net
    image = phantom_rows[0]["image"]
    assert model.segment_masks(image, ["heart"])["heart"].shape == image.size[::-1]
    lineage = read_training_record(second).initialised_from
    assert lineage.path == str(first) and lineage.image_size == 64 and lineage.initialised_from is None

    config = json.loads((first / "config.json").read_text())
    (first / "config.json").write_text(json.dumps({**config, "_structures": ["brain"]}))
    with pytest.raises(ValueError, match="other structures"):
        train(UNetTrainConfig(corpus_dir=str(phantom_corpus), output_dir=str(tmp_path / "x"), size=64, max_steps=1,
                              init_from=str(first)))  # fmt: skip


def test_a_unet_continues_on_a_corpus_with_new_structures(phantom_corpus, phantom_rows, tmp_path):
    """A U-Net saved without the lung fields continues on a corpus that has them: kept channels keep their weights,
    a new lung field starts from its lung's channel, and the record lists the change."""
    first, second = tmp_path / "old", tmp_path / "new"
    train(UNetTrainConfig(corpus_dir=str(phantom_corpus), output_dir=str(first), size=64, max_steps=1, batch_size=2,
                          decoder_channels=[32, 16, 16, 8, 8]))  # fmt: skip
    old = AnatomyUNet.from_pretrained(str(first))
    kept = [n for n in old.structures if not n.startswith("lung_field")]
    reduced = AnatomyUNet(kept, 64, "resnet18", (32, 16, 16, 8, 8))
    state = old.state_dict()
    head = [old.structures.index(n) for n in kept]
    for key in ("net.segmentation_head.0.weight", "net.segmentation_head.0.bias"):
        state[key] = state[key][head]
    reduced.load_state_dict(state)
    reduced.save_pretrained(first)
    config = UNetTrainConfig(
        corpus_dir=str(phantom_corpus), output_dir=str(second), size=64, max_steps=1, init_from=str(first)
    )
    model, change = initial_model(config, old.structures)
    assert change == {"added": ["lung_field_left", "lung_field_right", "lung_fields"], "dropped": []}
    new_head, old_head = model.net.segmentation_head[0].weight, reduced.net.segmentation_head[0].weight
    assert torch.equal(new_head[model.structures.index("heart")], old_head[kept.index("heart")])
    assert torch.equal(new_head[model.structures.index("lung_field_left")], old_head[kept.index("lung_left")])


def test_a_saved_unet_is_an_smp_unet_with_its_structure_names(tmp_path):
    """segmentation-models-pytorch alone loads the folder (no code of ours), with the same outputs."""
    model = AnatomyUNet(["heart", "lung_left"], size=64, encoder="resnet18", decoder_channels=(32, 16, 16, 8, 8)).eval()
    model.save_pretrained(tmp_path / "unet")
    assert sorted(p.name for p in (tmp_path / "unet").iterdir()) == ["config.json", "model.safetensors"]
    net = smp.from_pretrained(str(tmp_path / "unet")).eval()
    assert type(net) is smp.Unet
    assert net.config["_structures"] == ["heart", "lung_left"] and net.config["_input_size"] == 64
    images = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(net(images), model(images))


def test_a_unet_folder_of_the_earlier_format_still_loads(tmp_path):
    """Folders saved before the smp format (structures/size/encoder in config.json, parameters under net.) load."""
    from safetensors.torch import save_file

    from chexanatomy.inference import load_segmenter

    model = AnatomyUNet(["heart", "lung_left"], size=64, encoder="resnet18", decoder_channels=(32, 16, 16, 8, 8)).eval()
    old = tmp_path / "old"
    old.mkdir()
    config = {"structures": model.structures, "size": 64, "encoder": "resnet18", "decoder_channels": [32, 16, 16, 8, 8]}
    (old / "config.json").write_text(json.dumps(config))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, old / "model.safetensors")
    images = torch.rand(1, 1, 64, 64)
    reloaded = AnatomyUNet.from_pretrained(old)
    assert reloaded.structures == model.structures and reloaded.size == 64
    with torch.no_grad():
        assert torch.equal(reloaded(images), model(images))
    image = np.random.default_rng(0).integers(0, 255, (70, 90), dtype=np.uint8)
    assert load_segmenter(old, device="cpu").segment(image, ["heart"])["heart"].mask.shape == (70, 90)


def test_push_to_hub_uploads_the_output_folder_to_hub_model_id(phantom_corpus, tmp_path, fake_hub):
    from train.unet import main

    out = tmp_path / "unet"
    argv = ["--corpus_dir", str(phantom_corpus), "--output_dir", str(out), "--size", "64", "--max_steps", "1",
            "--batch_size", "2", "--decoder_channels", "32", "16", "16", "8", "8",
            "--push_to_hub", "true", "--hub_model_id", "me/unet"]  # fmt: skip
    assert main(argv) == 0
    assert fake_hub[0] == ("create_repo", "me/unet", False) and fake_hub[1][:2] == ("upload_folder", "me/unet")
    assert {"config.json", "model.safetensors", "training_config.json"} <= set(fake_hub[1][2])
