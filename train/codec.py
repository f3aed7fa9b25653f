"""Train the anatomy mask codec (the `vae-oid` VQ-VAE) on projected masks from a corpus.

    python -m train.codec --corpus_dir outputs/drr --output_dir outputs/mask_codec            # CPU, ~15 min
    python -m train.codec --corpus_dir outputs/drr --steps 6000 --batch_size 512 --device cuda  # GPU, ~3 min
    python -m train.codec --config train/recipes/codec.yaml                                   # the bundled one
    python -m train.codec --corpus_dir outputs/drr --push_to_hub true --hub_model_id chexanatomy/mask-codec

Recipe (docs/mask-tokens.md, adapted to anatomy): MSE on [-1, 1] targets + 0.25 commitment, EMA codebook
(decay 0.99), AdamW lr 3e-4 without weight decay, linear warm-up then cosine decay; codes unused for
``restart_after`` steps are restarted on random encoder outputs so the codebook does not collapse. Crops are
warped on the fly (``train/codec_data.py``) so the codec generalises beyond the CT it was trained on.
Writes ``config.json`` + ``model.safetensors`` (``MaskVQVAE.from_pretrained`` loads them),
``training_config.json`` (a ``TrainingRecord``) and ``metrics.jsonl`` into ``output_dir``.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from chexanatomy.cli import MISSING_INPUT, HubOptions, parse_config, prog_name, run_main
from chexanatomy.codec import load_codec
from chexanatomy.locate import resolve_device
from chexanatomy.masks import dice
from chexanatomy.publish import push_folder
from chexanatomy.training_record import codec_record
from chexanatomy.vqvae import MaskVQVAE

from .codec_data import Augmentation, AugmentedStream, augmented_batch, load_mask_bank


@dataclass
class CodecTrainConfig(HubOptions):
    """Options of ``python -m train.codec`` (every field is a ``--flag``; publishing: ``HubOptions``)."""

    corpus_dir: str = field(default="outputs/drr", metadata={"help": "Corpus folder built by dataset_builder."})
    output_dir: str = field(default="outputs/mask_codec", metadata={"help": "Where the codec is saved."})
    steps: int = field(default=3000, metadata={"help": "Optimiser steps."})
    batch_size: int = field(default=256, metadata={"help": "Masks per step."})
    learning_rate: float = field(default=3e-4, metadata={"help": "AdamW peak learning rate."})
    warmup_steps: int = field(default=300, metadata={"help": "Linear warm-up steps before the cosine decay."})
    restart_after: int = field(default=50, metadata={"help": "Restart codes unused for this many steps."})
    augment: bool = field(default=True, metadata={"help": "Random affine + elastic warp of every crop."})
    resize: str = field(default="bilinear", metadata={"help": "Crop resize of the tokenizer: bilinear or nearest."})
    init_from: str | None = field(
        default=None, metadata={"help": "Start from a codec: a saved folder, a vae-oid .npz, a Hub id or 'default'."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of initialisation and batches."})
    device: str = field(default="auto", metadata={"help": "auto, cpu or cuda."})
    log_every: int = field(default=100, metadata={"help": "Steps between metric lines."})
    num_workers: int = field(default=0, metadata={"help": "DataLoader processes making augmented crops."})
    max_seconds: float = field(default=0, metadata={"help": "Stop (and save) after this long; 0 = no limit."})

    def __post_init__(self):
        super().__post_init__()
        if self.resize not in ("bilinear", "nearest"):
            raise ValueError(f"resize must be 'bilinear' or 'nearest', got {self.resize!r}")
        if self.steps < 1 or self.batch_size < 2:
            raise ValueError("steps must be >= 1 and batch_size >= 2")


def learning_rate_at(step: int, config: CodecTrainConfig) -> float:
    """Linear warm-up to the peak, then cosine decay to zero at ``config.steps``."""
    warm = min(config.warmup_steps, config.steps // 10 or 1)
    if step < warm:
        return config.learning_rate * (step + 1) / warm
    progress = (step - warm) / max(config.steps - warm, 1)
    return config.learning_rate * 0.5 * (1 + math.cos(math.pi * progress))


def mean_dice(reconstruction: torch.Tensor, masks: torch.Tensor) -> float:
    """Mean ``chexanatomy.masks.dice`` between thresholded reconstructions (> 0) and masks (> 0.5), [B, 64, 64]."""
    pred, true = (reconstruction > 0).cpu().numpy(), (masks > 0.5).cpu().numpy()
    return float(np.mean([dice(p, t) for p, t in zip(pred, true, strict=True)]))


def initial_codec(config: CodecTrainConfig) -> MaskVQVAE:
    """The codec that training starts from (``train`` moves it to the device and sets train mode).

    A freshly initialised ``MaskVQVAE`` when ``init_from`` is None; else ``chexanatomy.codec.load_codec``'s: a
    big_vision ``vae-oid`` ``.npz`` checkpoint, a folder saved by ``MaskVQVAE.save_pretrained``, a Hub id or
    ``"default"`` (the bundled codec).
    """
    if config.init_from is None:
        return MaskVQVAE()
    codec = load_codec(config.init_from)
    if codec is None:
        raise ValueError("init_from='none' names no codec: leave init_from unset to start from scratch")
    return codec


@torch.no_grad()
def seed_codebook(codec: MaskVQVAE, masks: torch.Tensor, gen: torch.Generator) -> None:
    """Start every code on a random encoder output.

    A random codebook far from the encoder's outputs sends every latent to one code, and the codebook collapses
    before any restart can help.
    """
    latents = codec.encode_latents(masks)
    codec.quantizer.restart_dead_codes(latents.reshape(-1, latents.shape[-1]), 0, gen)


def train(config: CodecTrainConfig) -> dict:
    """Run the training; returns the final metrics."""
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    bank = load_mask_bank(config.corpus_dir)
    codec = initial_codec(config).to(device).train()
    if config.init_from is None:
        seed_codebook(
            codec,
            augmented_batch(bank, 512, Augmentation() if config.augment else None, gen, device, config.resize),
            gen,
        )
    optimiser = torch.optim.AdamW(codec.parameters(), lr=config.learning_rate, weight_decay=0.0)
    aug = Augmentation() if config.augment else None
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    stream = AugmentedStream(bank, config.batch_size, aug, config.seed, config.resize)
    loader = iter(torch.utils.data.DataLoader(stream, batch_size=None, num_workers=config.num_workers))
    log, start, metrics, steps_done = open(out / "metrics.jsonl", "w", encoding="utf-8"), time.time(), {}, 0
    for step in range(config.steps):
        for group in optimiser.param_groups:
            group["lr"] = learning_rate_at(step, config)
        masks = next(loader).to(device, non_blocking=True)
        result = codec(masks)
        optimiser.zero_grad(set_to_none=True)
        result.loss.backward()
        optimiser.step()
        codec.ema_update(result.latents, result.indices)
        restarted = codec.quantizer.restart_dead_codes(
            result.latents.reshape(-1, result.latents.shape[-1]), config.restart_after, gen
        )
        steps_done = step + 1
        if step % config.log_every == 0 or step == config.steps - 1:
            metrics = {
                "step": step, "loss": round(float(result.reconstruction_loss.detach()), 5),
                "dice_64": round(mean_dice(result.reconstruction.detach(), masks), 4),
                "codes_used": int(result.indices.unique().numel()), "restarted": restarted, "lr": group["lr"],
                "seconds": round(time.time() - start, 1),
            }  # fmt: skip
            log.write(json.dumps(metrics) + "\n")
            log.flush()
            print(metrics, flush=True)
        if config.max_seconds and time.time() - start > config.max_seconds:
            print(f"stopping at step {step}: --max_seconds {config.max_seconds} reached", flush=True)
            break
    log.close()
    codec.eval().cpu().save_pretrained(out)
    codec_record(asdict(config), steps_done=steps_done, masks_in_bank=len(bank.names)).save(out)
    if config.push_to_hub:
        push_folder(out, config.hub_model_id, private=config.hub_private_repo,
                    commit_message="CheXanatomy anatomy mask codec")  # fmt: skip
    return metrics


def main(argv: list[str] | None = None) -> int:
    """``python -m train.codec`` / ``chexanatomy-train-codec``: 0 when trained, 2 on a usage error (one line)."""
    return run_main(_main, argv, errors=MISSING_INPUT)


def _main(argv: list[str]) -> int:
    config = parse_config(CodecTrainConfig, argv, prog_name("train.codec"), __doc__)
    metrics = train(config)
    print(f"codec trained {metrics.get('step', -1) + 1} steps -> {config.output_dir} (last: {metrics})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
