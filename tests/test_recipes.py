"""Every shipped recipe parses into its command's configuration, so a documented command cannot fail on its YAML."""

from pathlib import Path

import pytest
import yaml
from trl import SFTConfig

from chexanatomy.cli import parse_config
from dataset_builder.build import BuildConfig
from train.codec import CodecTrainConfig
from train.sft import AnatomyArguments
from train.unet import UNetTrainConfig

ROOT = Path(__file__).resolve().parents[1]
SFT_RECIPES = sorted(
    p for p in (ROOT / "train" / "recipes").glob("*.yaml") if not p.name.startswith(("unet", "accelerate", "codec"))
)


@pytest.mark.parametrize("recipe", sorted((ROOT / "dataset_builder" / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_corpus_recipes_parse(recipe):
    config = parse_config(BuildConfig, ["--config", str(recipe)])
    assert config.output_dir == yaml.safe_load(recipe.read_text())["output_dir"]


@pytest.mark.parametrize("recipe", SFT_RECIPES, ids=lambda p: p.name)
def test_sft_recipes_parse_with_the_papers_defaults_or_the_tiny_exceptions(recipe):
    raw = yaml.safe_load(recipe.read_text())
    # transformers refuses bf16 without a GPU at parse time; the GPU recipes say bf16 and are parsed here without it.
    cpu = ["--bf16", "false"] if raw.get("bf16") else []
    anatomy, sft = parse_config((AnatomyArguments, SFTConfig), ["--config", str(recipe), *cpu])
    if anatomy.model_name_or_path.startswith("google/paligemma"):
        assert raw["bf16"] is True
        assert anatomy.lora and anatomy.lora_r == 16 and not anatomy.train_vision
        assert sft.learning_rate == 5e-5 and sft.lr_scheduler_type == "linear"
    elif anatomy.model_name_or_path.endswith("_tower"):  # a tower pre-trained by train.vision_pretrain: kept frozen
        assert not anatomy.lora and not anatomy.train_vision and anatomy.train_projector
        # a language model from scratch learns <loc> with the prior; one that answers already keeps hard targets
        assert anatomy.loc_sigma > 0 if anatomy.loc_init else anatomy.loc_sigma == 0
    else:  # the tiny model, trained from scratch: every weight and the vision tower train
        assert not anatomy.lora and anatomy.train_vision


@pytest.mark.parametrize("recipe", sorted((ROOT / "train" / "recipes").glob("unet*.yaml")), ids=lambda p: p.name)
def test_unet_recipes_parse(recipe):
    config = parse_config(UNetTrainConfig, ["--config", str(recipe)])
    raw = yaml.safe_load(recipe.read_text())
    assert config.size == (256 if "256" in recipe.name else 128) and config.encoder == "mobilenet_v2"
    assert config.bf16 == (recipe.name != "unet_bundled.yaml")  # the format-1.0 stages ran in float32
    # the augmentation a recipe names reaches the run; the rest stays off (the recipes before them did not use it)
    assert config.augment_aspect == raw.get("augment_aspect", [1.0, 1.0])
    assert config.augment_deform == raw.get("augment_deform", 0.0)


def test_codec_recipe_parses_to_the_bundled_codecs_first_stage():
    recorded = ROOT / "chexanatomy" / "assets" / "mask_codec" / "training_config_stage1.json"
    config = parse_config(CodecTrainConfig, ["--config", str(ROOT / "train" / "recipes" / "codec.yaml")])
    stage1 = yaml.safe_load(recorded.read_text())
    assert {k: getattr(config, k) for k in ("steps", "batch_size", "learning_rate", "warmup_steps", "resize")} == {
        k: stage1[k] for k in ("steps", "batch_size", "learning_rate", "warmup_steps", "resize")
    }
