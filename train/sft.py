"""Fine-tune PaliGemma to segment chest X-ray anatomy with TRL's SFTTrainer (LoRA by PEFT).

    python -m train.sft --config train/recipes/paligemma2-3b-pt-448.yaml --corpus_dir outputs/drr      # GPU
    python -m train.sft --config train/recipes/tiny.yaml --corpus_dir outputs/drr --output_dir outputs/tiny-vlm
    accelerate launch --config_file train/recipes/accelerate_multi_gpu.yaml -m train.sft --config ...   # several GPUs
    python -m train.sft --config ... --push_to_hub true --hub_model_id chexanatomy/paligemma2-3b-anatomy-448

Defaults follow the paper: LoRA r=16 on q/k/v/o/gate/up/down of the language model, vision tower frozen
(``--train_vision`` for the ablation), AdamW lr 5e-5, linear schedule, bf16 on GPU. ``tiny`` builds a small
PaliGemma-architecture model from a config with a locally trained tokenizer and trains all its weights.

The output folder holds the adapter (or the full model), the processor, the mask codec (``mask_codec/``), the
run's ``TrainingRecord`` (``training_config.json``) and the trainer's metrics; a killed run resumes from its last
checkpoint when started again with the same ``--output_dir``. ``--push_to_hub true --hub_model_id ID`` uploads the
folder once, at the end.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
import torch
from trl import SFTConfig, SFTTrainer

from chexanatomy.cli import MISSING_INPUT, check_hub_options, parse_config, prog_name, run_main
from chexanatomy.codec import DEFAULT_CODEC_DIR, default_tokenizer, load_codec
from chexanatomy.finetune import answer_only_trainer_class, prepare_sft_config
from chexanatomy.publish import push_folder
from chexanatomy.training_record import read_training_record, sft_record

from .augment import RadiographAugmentation, check_aspect, check_deform
from .collator import AnatomyCollator, lazy_masks
from .dense_aux import DenseAuxiliary, dense_trainer_class
from .grow import grow_text_layers
from .lm_loss import LORA_TARGETS, VISION_LORA_TARGETS
from .loc_prior import init_loc_embeddings, loc_smoothing, untie_output_embeddings
from .seg_shape import SegShapeLoss
from .vision_pretrain import HEAD_FILE, condition_projector, load_pixel_head


@dataclass
class AnatomyArguments:
    """What to train on and how (the optimiser and schedule are ``SFTConfig``'s own flags)."""

    model_name_or_path: str = field(
        default="google/paligemma2-3b-pt-448", metadata={"help": "Hub id, folder or 'tiny'."}
    )
    corpus_dir: str = field(default="outputs/drr", metadata={"help": "Corpus folder or Hub dataset id."})
    codec: str = field(
        default="default",
        metadata={"help": "Mask codec re-tokenising augmented masks: 'default', a folder, a vae-oid .npz, a Hub id."},
    )
    lora: bool = field(default=True, metadata={"help": "Train LoRA adapters (False: all language-model weights)."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    train_vision: bool = field(default=False, metadata={"help": "Also train the vision tower (ablation)."})
    structures_per_sample: int = field(default=20, metadata={"help": "Structures packed into one answer."})
    detect_fraction: float = field(default=0.2, metadata={"help": "Share of detect (box-only) samples."})
    synonym_fraction: float = field(default=0.3, metadata={"help": "Share of prompts naming a synonym."})
    augment_fraction: float = field(default=0.5, metadata={"help": "Share of samples scaled/offset (re-tokenised)."})
    augment_zoom: list[float] = field(
        default_factory=lambda: list(RadiographAugmentation.zoom),
        metadata={"help": "Zoom range (min max) of the augmentation; < 1 shrinks the radiograph onto black."},
    )
    augment_rotation: float = field(
        default=RadiographAugmentation.max_rotation_deg, metadata={"help": "Rotation range (+-, degrees)."}
    )
    augment_shift: float = field(
        default=RadiographAugmentation.max_shift, metadata={"help": "Shift range (+-) as a fraction of the side."}
    )
    augment_aspect: list[float] = field(
        default_factory=lambda: list(RadiographAugmentation.aspect),
        metadata={"help": "Vertical stretch range (min max, height over width) of the augmentation; 1 1 is off."},
    )
    augment_deform: float = field(
        default=RadiographAugmentation.deform,
        metadata={
            "help": "Smooth deformation inside the frame (its edges stay straight): largest displacement, a "
            "fraction of the side (0: off)."
        },
    )
    area_power: float = field(
        default=0.0,
        metadata={
            "help": "Draw an answer's structures with weight (area fraction) ** this (0: uniform; 0.5 answers the "
            "large structures the evaluation scores more often; train.collator)."
        },
    )
    train_projector: bool = field(
        default=False,
        metadata={"help": "Train the projector even with the tower frozen (a tower from train.vision_pretrain)."},
    )
    loc_init: bool = field(
        default=False,
        metadata={"help": "Ordered <loc> embeddings at the start (a language model from scratch; train.loc_prior)."},
    )
    untie_output: bool = field(
        default=False,
        metadata={
            "help": "Give the output layer its own copy of the tied embeddings first, so that its rows can move apart "
            "from the input rows (the tied copy bias: x0 == y0; train.loc_prior). Implied by --loc_init."
        },
    )
    grow_text_layers: int = field(
        default=0,
        metadata={
            "help": "Insert this many decoder layers first, each a copy of the layer before it with its output gates "
            "closed, so the answers start unchanged (train.grow). 0: the model's own depth."
        },
    )
    loc_sigma: float = field(
        default=0.0, metadata={"help": "Soft <loc> targets: Gaussian over bins with this std in bins (0: hard)."}
    )
    seg_shape_weight: float = field(
        default=0.0,
        metadata={
            "help": "Add the <seg> codes' shape loss with this weight: the mask their expected code vectors draw "
            "through the frozen codec decoder, Dice + BCE against the target codes' mask (train.seg_shape). 0: off."
        },
    )
    dense_weight: float = field(
        default=0.0,
        metadata={
            "help": "Keep the tower's dense pre-training loss on, with this weight, while it trains (needs "
            "--train_vision true and a pixel head; train.dense_aux). 0: off."
        },
    )
    dense_head: str = field(
        default="",
        metadata={"help": "With --dense_weight: the pixel_head.safetensors (or its folder); default the model's; "
                  "'fit': a new head fitted on the frozen tower first (a published folder carries none)."},
    )
    position_weight: float = field(
        default=0.0,
        metadata={
            "help": "With --dense_weight: also train the tower's tokens to say their own row and column, with this "
            "weight inside the dense loss (train.vision_pretrain.PixelHead.position_loss). 0: off."
        },
    )
    vision_lr_scale: float = field(
        default=1.0, metadata={"help": "The vision tower's learning rate as a fraction of --learning_rate."}
    )
    num_beams: int = field(
        default=1,
        metadata={"help": "Beam width written into the output's generation_config.json (1: greedy decoding)."},
    )
    merge: bool = field(default=False, metadata={"help": "Also save the LoRA-merged model under merged/."})
    loss_on_answer_only: bool = field(default=True, metadata={"help": "Logits only at answer positions (memory)."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training rows."})

    def __post_init__(self):
        if not (self.loc_sigma >= 0 and math.isfinite(self.loc_sigma)):
            raise ValueError(f"--loc_sigma must be a finite number of bins >= 0, got {self.loc_sigma}")
        if self.loc_sigma and not self.loss_on_answer_only:
            raise ValueError("--loc_sigma needs the answer-only loss (--loss_on_answer_only true)")
        if not (self.seg_shape_weight >= 0 and math.isfinite(self.seg_shape_weight)):
            raise ValueError(f"--seg_shape_weight must be a finite number >= 0, got {self.seg_shape_weight}")
        if self.seg_shape_weight and not self.loss_on_answer_only:
            raise ValueError("--seg_shape_weight needs the answer-only loss (--loss_on_answer_only true)")
        if not (self.dense_weight >= 0 and math.isfinite(self.dense_weight)):
            raise ValueError(f"--dense_weight must be a finite number >= 0, got {self.dense_weight}")
        if not (self.position_weight >= 0 and math.isfinite(self.position_weight)):
            raise ValueError(f"--position_weight must be a finite number >= 0, got {self.position_weight}")
        if self.position_weight and not self.dense_weight:
            raise ValueError("--position_weight is a part of the dense loss: set --dense_weight too")
        if self.grow_text_layers < 0:
            raise ValueError(f"--grow_text_layers must be 0 or more, got {self.grow_text_layers}")
        if self.grow_text_layers and self.lora:
            raise ValueError("--grow_text_layers adds layers LoRA would leave untrained: set --lora false")
        if self.num_beams < 1:
            raise ValueError(f"--num_beams must be at least 1, got {self.num_beams}")
        if not (self.vision_lr_scale > 0 and math.isfinite(self.vision_lr_scale)):
            raise ValueError(f"--vision_lr_scale must be a positive number, got {self.vision_lr_scale}")
        if self.dense_weight and (self.lora or not self.train_vision or not self.loss_on_answer_only):
            raise ValueError("--dense_weight trains the tower itself: set --train_vision true --lora false "
                             "(with the answer-only loss)")
        if len(self.augment_zoom) != 2 or not 0 < self.augment_zoom[0] <= self.augment_zoom[1]:
            raise ValueError(f"--augment_zoom takes two factors, 0 < min <= max, got {self.augment_zoom}")
        if not (0 <= self.augment_rotation <= 180 and 0 <= self.augment_shift < 1):
            raise ValueError("--augment_rotation must be 0-180 degrees and --augment_shift 0 to < 1 of the side")
        check_aspect(self.augment_aspect)
        check_deform(self.augment_deform)
        if self.codec.lower() == "none":
            raise ValueError("training re-tokenises augmented masks: it needs a codec (--codec none is for corpora)")
        if self.model_name_or_path == "tiny" and self.lora:
            raise ValueError("model_name_or_path 'tiny' is trained from scratch: set --lora false")
        if self.model_name_or_path == "tiny" and not self.train_vision:
            # A frozen, randomly initialised vision tower would leave the model localising from noise features.
            raise ValueError("model_name_or_path 'tiny' is trained from scratch: set --train_vision true")


def load_model_and_processor(args: AnatomyArguments, on_gpu: bool):
    """The model and processor: the tiny one built from a config, else from the Hub or a folder."""
    if args.model_name_or_path == "tiny":
        from .tiny_paligemma import build_model, build_processor

        processor = build_processor()
        return build_model(processor), processor
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(args.model_name_or_path)
    model = AutoModelForImageTextToText.from_pretrained(
        args.model_name_or_path,
        dtype=torch.bfloat16 if on_gpu else torch.float32,
        attn_implementation="eager",  # Gemma 2 soft-capping: no SDPA (docs/environment.md)
    )
    return model, processor


def freeze(model, args: AnatomyArguments) -> None:
    """Freeze what this run does not train (LoRA: PEFT freezes the base itself).

    Full training: the vision tower unless ``train_vision``, the projector unless ``train_vision`` or
    ``train_projector``.
    """
    for name, p in model.named_parameters():
        if "vision_tower" in name:
            p.requires_grad = not args.lora and args.train_vision
        elif "multi_modal_projector" in name:
            p.requires_grad = not args.lora and (args.train_vision or args.train_projector)
        else:
            p.requires_grad = not args.lora


def peft_config(args: AnatomyArguments):
    """The PEFT ``LoraConfig`` of ``args``, or None when training without LoRA.

    Targets the language model's q/k/v/o/gate/up/down projections (``LORA_TARGETS``), plus the vision tower's
    (``VISION_LORA_TARGETS``) when ``train_vision`` is set.
    """
    if not args.lora:
        return None
    from peft import LoraConfig

    targets = LORA_TARGETS if not args.train_vision else f"({LORA_TARGETS})|({VISION_LORA_TARGETS})"
    return LoraConfig(
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
    )


def load_splits(args: AnatomyArguments):
    """The ``(train, validation)`` splits of ``args.corpus_dir`` with masks left undecoded (``lazy_masks``).

    ``train`` keeps only its first ``max_train_samples`` rows when that is set; ``validation`` is None when the
    corpus has no validation split.
    """
    ds = datasets.load_dataset(args.corpus_dir)
    train = ds["train"]
    if args.max_train_samples:
        train = train.select(range(min(args.max_train_samples, len(train))))
    validation = ds.get("validation")
    return lazy_masks(train), lazy_masks(validation) if validation is not None else None


MAX_NEW_TOKENS = 512  # a bare generate() must finish an answer: 20 structures x (4 + 16 + name + " ; ") tokens


def set_generation_defaults(model, num_beams: int = 1) -> None:
    """Deterministic decoding up to ``MAX_NEW_TOKENS`` in the saved ``generation_config.json``.

    Greedy, or a beam search over ``num_beams`` answers; ``chexanatomy.inference`` and a bare ``generate`` both
    follow it. transformers' default is 20 new tokens: a box and codes, no name, no ``<eos>``.
    """
    config = model.generation_config
    config.max_new_tokens, config.do_sample, config.num_beams = MAX_NEW_TOKENS, False, num_beams


def save_outputs(trainer: SFTTrainer, processor, args: AnatomyArguments, sft: SFTConfig) -> Path:
    """Adapter or model + processor + codec + ``TrainingRecord`` + metrics in ``sft.output_dir``."""
    out = Path(sft.output_dir)
    set_generation_defaults(trainer.model, args.num_beams)
    trainer.save_model(str(out))
    processor.save_pretrained(str(out))
    codec_dir = DEFAULT_CODEC_DIR if args.codec == "default" else Path(args.codec)
    if codec_dir.is_dir():
        shutil.copytree(codec_dir, out / "mask_codec", dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.jsonl"))
    else:
        load_codec(args.codec).save_pretrained(out / "mask_codec")
    options = {k: v for k, v in sft.to_dict().items() if _jsonable(v)}
    sft_record(asdict(args), options, read_training_record(args.model_name_or_path)).save(out)
    (out / "training_metrics.json").write_text(json.dumps(trainer.state.log_history, indent=2) + "\n", encoding="utf-8")
    if args.merge and args.lora:
        trainer.model.merge_and_unload().save_pretrained(str(out / "merged"))
        processor.save_pretrained(str(out / "merged"))
    return out


def _jsonable(value) -> bool:
    try:
        json.dumps(value)
        return True
    except TypeError:
        return False


AnatomySFTTrainer = answer_only_trainer_class()


def build_trainer(args: AnatomyArguments, sft: SFTConfig) -> tuple[SFTTrainer, object]:
    """The SFTTrainer (model, data, collator, LoRA) and the processor, ready to ``train``."""
    sft = prepare_sft_config(sft)
    torch.manual_seed(sft.seed)
    model, processor = load_model_and_processor(args, torch.cuda.is_available())
    if args.loc_init:
        init_loc_embeddings(model, processor.tokenizer)
    elif args.untie_output:
        untie_output_embeddings(model)
    if args.grow_text_layers:
        print(f"language model grown: new layers {grow_text_layers(model, args.grow_text_layers)}")
    if args.train_vision and not args.lora:  # the tower moves: no projector weight may amplify a null direction
        print(f"projector conditioned (weight norm): {condition_projector(model.model)}")
    freeze(model, args)
    train, validation = load_splits(args)
    codec = load_codec(args.codec)
    collator = AnatomyCollator(
        processor, default_tokenizer(codec), args.structures_per_sample,
        args.detect_fraction, args.synonym_fraction, args.augment_fraction, augmentation(args),
        area_power=args.area_power, seed=sft.seed,
    )  # fmt: skip
    trainer_class = AnatomySFTTrainer if args.loss_on_answer_only else SFTTrainer
    if args.dense_weight or args.vision_lr_scale != 1:
        trainer_class = dense_trainer_class()
    trainer = trainer_class(
        model=model, args=sft, train_dataset=train, eval_dataset=validation if sft.eval_strategy != "no" else None,
        data_collator=collator, processing_class=processor, peft_config=peft_config(args),
    )  # fmt: skip
    trainer.loc_smoothing = loc_smoothing(processor.tokenizer, args.loc_sigma)
    if args.seg_shape_weight:
        trainer.seg_shape = SegShapeLoss(codec, processor.tokenizer, args.seg_shape_weight)
    if args.dense_weight or args.vision_lr_scale != 1:
        trainer.vision_lr_scale = args.vision_lr_scale
        trainer.dense = _dense_auxiliary(args, sft, model) if args.dense_weight else None
    return trainer, processor


def augmentation(args: AnatomyArguments) -> RadiographAugmentation:
    """The radiograph augmentation's ranges of ``args`` (the rest at ``RadiographAugmentation``'s defaults)."""
    return RadiographAugmentation(zoom=tuple(args.augment_zoom), max_rotation_deg=args.augment_rotation,
                                  max_shift=args.augment_shift, aspect=tuple(args.augment_aspect),
                                  deform=args.augment_deform)  # fmt: skip


def _dense_auxiliary(args: AnatomyArguments, sft: SFTConfig, model) -> DenseAuxiliary:
    """The dense task of ``--dense_weight``: the head of ``--dense_head`` (else the model folder's), answers' batch."""
    head = args.dense_head or args.model_name_or_path
    vision = model.config.vision_config
    try:
        return DenseAuxiliary(head, args.corpus_dir, vision.image_size, args.dense_weight,
                              sft.per_device_train_batch_size, sft.seed, augmentation(args),
                              args.position_weight, vision.hidden_size)  # fmt: skip
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{error}; --dense_head fit fits a new one on the tower first") from None


def train(args: AnatomyArguments, sft: SFTConfig) -> Path:
    """Train (resuming from the last checkpoint in ``output_dir`` if any), save, and push when ``sft.push_to_hub``.

    Returns:
        The output folder.
    """
    push, sft.push_to_hub = sft.push_to_hub, False  # we upload once, at the end (no Trainer repo syncing)
    trainer, processor = build_trainer(args, sft)
    checkpoint = _last_checkpoint(sft.output_dir)
    if checkpoint is not None and not args.lora:
        _restore_weights(trainer.model, checkpoint)
    dense = getattr(trainer, "dense", None)
    if checkpoint is not None and dense is not None and (Path(checkpoint) / HEAD_FILE).is_file():
        dense.head.load_state_dict(load_pixel_head(checkpoint).state_dict())
        dense.unfitted = False  # a resumed run continues its own head
    trainer.train(resume_from_checkpoint=checkpoint)
    out = save_outputs(trainer, processor, args, trainer.args)
    if dense is not None:
        dense.save(out)
    if push:
        push_folder(out, sft.hub_model_id, private=bool(sft.hub_private_repo),
                    commit_message="CheXanatomy: PaliGemma anatomy fine-tune")  # fmt: skip
    return out


def _restore_weights(model, checkpoint: str) -> None:
    """Load a full model's weights from ``checkpoint`` into ``model`` (strict), as ``from_pretrained`` reads them.

    The Trainer's own resume loads ``model.safetensors`` with ``load_state_dict``, but ``save_pretrained`` writes
    PaliGemma under its Hub key names (``language_model.model.*``, not the class's ``model.language_model.*``): every
    key comes back missing and the run would silently continue from its *initial* weights. ``from_pretrained``
    applies the key mapping; the Trainer's load that follows then finds nothing to change.
    """
    from transformers import AutoModelForImageTextToText

    saved = AutoModelForImageTextToText.from_pretrained(checkpoint, attn_implementation="eager")
    model.load_state_dict(saved.state_dict(), strict=True)


def _last_checkpoint(output_dir: str) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(output_dir) if Path(output_dir).is_dir() else None


def main(argv: list[str] | None = None) -> int:
    """``python -m train.sft`` / ``chexanatomy-train``: 0 when trained, 2 on a usage error (one line)."""
    return run_main(_main, argv, errors=MISSING_INPUT)


def _main(argv: list[str]) -> int:
    args, sft = parse_config((AnatomyArguments, SFTConfig), argv, prog_name("train.sft"), __doc__)
    check_hub_options(sft)
    print(f"saved -> {train(args, sft)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
