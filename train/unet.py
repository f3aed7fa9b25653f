"""The U-Net baseline: one sigmoid channel per structure (structures overlap in a radiograph), Dice + BCE.

    python -m train.unet --corpus_dir outputs/drr --output_dir outputs/unet --epochs 40
    python -m train.unet --corpus_dir outputs/drr --output_dir outputs/unet \
        --push_to_hub true --hub_model_id chexanatomy/unet-anatomy

The network (``chexanatomy.unet.AnatomyUNet``, saved in segmentation-models-pytorch's format, so that
``smp.from_pretrained`` loads it) lives in the core so that evaluation and the Space load it without training code;
``accelerate`` places it on the GPU when there is one. Same splits and
radiograph augmentation (``train.augment``: zoom, rotation, shift, clinical processing, collimation, markers, blur,
noise) as the VLM; ``chexanatomy.inference.UNetSegmenter`` gives it the VLM's inference interface.
"""

from __future__ import annotations

import json
import random
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
import numpy as np
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from chexanatomy.anatomy import STRUCTURES
from chexanatomy.cli import MISSING_INPUT, HubOptions, parse_config, prog_name, run_main
from chexanatomy.masks import grey_levels
from chexanatomy.publish import push_folder
from chexanatomy.training_record import read_training_record, unet_record
from chexanatomy.unet import DEFAULT_DECODER_CHANNELS, AnatomyUNet, unet_settings

from .augment import RadiographAugmentation, augment_radiograph, check_aspect, check_deform

__all__ = [
    "AnatomyUNet", "UNetTrainConfig", "default_structures", "loss_fn", "main", "row_tensors", "train",
]  # fmt: skip


def default_structures(corpus_rows) -> list[str]:
    """Every structure that appears in the rows, in vocabulary order."""
    seen = {s["name"] for row in corpus_rows for s in row}
    return [n for n in STRUCTURES if n in seen]


def row_tensors(
    row: dict, structures: list[str], size: int, rng: random.Random | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(image [1, S, S] in [0, 1], targets [C, S, S] in {0, 1}) of a corpus row, augmented if ``rng``.

    The augmentation is ``train.augment.augment_radiograph`` (the VLM collator's too): geometry on image and
    targets together, radiograph style on the image.
    """
    image = torch.from_numpy(grey_levels(row["image"]))
    target = torch.zeros(len(structures), *image.shape)
    index = {n: i for i, n in enumerate(structures)}
    for s in row["structures"]:
        if s["name"] in index:
            target[index[s["name"]]] = torch.from_numpy(np.asarray(s["mask"], dtype=np.float32))
    both = F.interpolate(torch.cat([image[None], target])[None], size=(size, size), mode="bilinear", antialias=True)[0]
    image, target = both[:1], (both[1:] > 0.5).float()
    return augment_radiograph(image, target, rng) if rng is not None else (image, target)


def loss_fn(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Dice (multilabel, smp) + binary cross-entropy."""
    dice = smp.losses.DiceLoss(mode="multilabel", from_logits=True)
    return dice(logits, targets) + F.binary_cross_entropy_with_logits(logits, targets)


@dataclass
class UNetTrainConfig(HubOptions):
    """Options of ``python -m train.unet`` (publishing: ``HubOptions``)."""

    corpus_dir: str = field(default="outputs/drr", metadata={"help": "Corpus folder or Hub dataset id."})
    output_dir: str = field(default="outputs/unet", metadata={"help": "Where the U-Net is saved."})
    size: int = field(default=256, metadata={"help": "Input side in pixels."})
    encoder: str = field(default="resnet18", metadata={"help": "smp encoder (randomly initialised)."})
    decoder_channels: list[int] = field(
        default_factory=lambda: list(DEFAULT_DECODER_CHANNELS),
        metadata={"help": "U-Net decoder widths, deepest first (smp)."},
    )
    epochs: int = field(default=40, metadata={"help": "Passes over the training split."})
    max_steps: int = field(default=0, metadata={"help": "Stop after this many steps (0: run all epochs)."})
    batch_size: int = field(default=8, metadata={"help": "Images per step."})
    learning_rate: float = field(default=1e-3, metadata={"help": "AdamW learning rate (cosine decay)."})
    seed: int = field(default=0, metadata={"help": "Seed."})
    bf16: bool = field(
        default=False,
        metadata={"help": "bfloat16 autocast of forward and loss (AVX-512 BF16 CPUs, GPUs): bench_train_precision.py."},
    )
    init_from: str | None = field(
        default=None,
        metadata={"help": "Start from a saved U-Net (same structures), e.g. to continue at a higher --size."},
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

    def __post_init__(self):
        super().__post_init__()
        check_aspect(self.augment_aspect)
        check_deform(self.augment_deform)


def initial_model(config: UNetTrainConfig, structures: list[str]) -> tuple[AnatomyUNet, dict | None]:
    """A fresh U-Net, or the U-Net saved in the folder ``config.init_from`` at ``config.size``; and its head change.

    The network is fully convolutional, so a U-Net trained at one size continues at another; its encoder and
    decoder widths come from the saved ``config.json`` (``--encoder``/``--decoder_channels`` are ignored then).
    When the corpus has other structures than the saved U-Net (a new corpus version adds ``lung_field_left``), the
    output head is remapped: kept structures keep their channel, a new derived structure starts from its first
    member's channel (``lung_field_left`` from ``lung_left``), any other new one from scratch.

    Returns:
        ``(model, head_change)``: ``head_change`` is None, or ``{"added": [...], "dropped": [...]}``.

    Raises:
        ValueError: when the saved U-Net shares no structure with the corpus.
    """
    if config.init_from is None:
        return AnatomyUNet(structures, config.size, config.encoder, tuple(config.decoder_channels)), None
    config_text = (Path(config.init_from) / "config.json").read_text(encoding="utf-8")
    saved = unet_settings(json.loads(config_text))  # read before any weights
    if saved is None:
        raise ValueError(f"{config.init_from} holds no CheXanatomy U-Net (its config.json has no structures)")
    if not set(saved["structures"]) & set(structures):
        raise ValueError(f"{config.init_from} was trained on other structures than this corpus's "
                         f"(none in common); train from scratch instead")  # fmt: skip
    model = AnatomyUNet.from_pretrained(config.init_from, size=config.size)  # the rest of config.json is kept
    if saved["structures"] == structures:
        return model, None
    return _remap_head(model, structures, saved), {
        "added": [n for n in structures if n not in model.structures],
        "dropped": [n for n in model.structures if n not in structures],
    }


def _remap_head(model: AnatomyUNet, structures: list[str], saved: dict) -> AnatomyUNet:
    """A copy of ``model`` (saved with the ``config.json`` ``saved``) whose output channels are ``structures``."""
    remapped = AnatomyUNet(structures, model.size, saved["encoder"], tuple(saved["decoder_channels"]))
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("net.segmentation_head")}
    remapped.load_state_dict(state, strict=False)
    old_head, new_head = model.net.segmentation_head[0], remapped.net.segmentation_head[0]
    with torch.no_grad():
        for i, name in enumerate(structures):
            source = name if name in model.structures else next(
                (m for m in STRUCTURES[name].members if m in model.structures), None
            )
            if source is not None:
                j = model.structures.index(source)
                new_head.weight[i] = old_head.weight[j]
                new_head.bias[i] = old_head.bias[j]
    return remapped


def train(config: UNetTrainConfig) -> dict:
    """Train the U-Net; saves it with its ``TrainingRecord`` and loss history; returns the last metrics.

    A run with ``init_from`` nests that folder's record under ``initialised_from``.
    """
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    augmentation = RadiographAugmentation(aspect=tuple(config.augment_aspect), deform=config.augment_deform)
    rows = datasets.load_dataset(config.corpus_dir)["train"]
    structures = default_structures(rows["structures"])
    model, head_change = initial_model(config, structures)
    steps_per_epoch = -(-len(rows) // config.batch_size)
    total = config.max_steps or config.epochs * steps_per_epoch
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, total)
    model, optimiser = accelerator.prepare(model, optimiser)
    # Targets are kept as uint8 (a 256 px corpus of 200 images x 100 structures is 1.3 GB instead of 5 GB).
    cached = [(image, target.to(torch.uint8)) for image, target in
              (row_tensors(r, structures, config.size) for r in tqdm(rows, desc="decoding masks", unit="image"))]
    history, step = [], 0
    bar = tqdm(total=total, desc="U-Net", unit="step")
    while step < total:
        order = list(range(len(rows)))
        rng.shuffle(order)
        for start in range(0, len(order), config.batch_size):
            picked = (cached[i] for i in order[start : start + config.batch_size])
            batch = [augment_radiograph(image, target.float(), rng, augmentation) for image, target in picked]
            images, targets = (torch.stack(t).to(accelerator.device) for t in zip(*batch, strict=True))
            with torch.autocast(accelerator.device.type, dtype=torch.bfloat16, enabled=config.bf16):
                loss = loss_fn(model(images).float(), targets)
            optimiser.zero_grad()
            accelerator.backward(loss)
            optimiser.step()
            schedule.step()
            step += 1
            history.append({"step": step, "loss": round(float(loss.detach()), 5)})
            bar.update()
            bar.set_postfix(loss=history[-1]["loss"])
            if step >= total:
                break
    out = Path(config.output_dir)
    unwrapped = accelerator.unwrap_model(model).cpu()
    unwrapped.save_pretrained(out)
    unet_record(asdict(config), read_training_record(config.init_from), head_remapped=head_change).save(out)
    (out / "training_metrics.json").write_text(json.dumps(history) + "\n", encoding="utf-8")
    if config.push_to_hub:
        push_folder(out, config.hub_model_id, private=config.hub_private_repo, commit_message="CheXanatomy U-Net")
    return history[-1]


def main(argv: list[str] | None = None) -> int:
    """``python -m train.unet`` / ``chexanatomy-train-unet``: 0 when trained, 2 on a usage error (one line)."""
    return run_main(_main, argv, errors=MISSING_INPUT)


def _main(argv: list[str]) -> int:
    config = parse_config(UNetTrainConfig, argv, prog_name("train.unet"), __doc__)
    print(f"U-Net trained -> {config.output_dir}: {train(config)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
