"""Stage 0 of a VLM trained from scratch: pre-train its SigLIP vision tower to see anatomy before it learns to talk.

    python -m train.vision_pretrain --corpus_dir outputs/drr40 --output_dir outputs/tiny_vlm_tower --max_steps 1500
    python -m train.sft --config train/recipes/tiny_bundled_tower.yaml --model_name_or_path outputs/tiny_vlm_tower

The real PaliGemma starts from a SigLIP tower pre-trained on billions of images; a model built from a config here
(``train.tiny_paligemma``) starts from noise and cannot download one. This stage is the stand-in: the tiny
PaliGemma's own vision tower is trained as a dense predictor on the corpus (a throwaway linear *pixel head* turns
each 16 px patch token into that patch's 16 x 16 pixels of every structure's mask; Dice + BCE as the U-Net,
``train.unet.loss_fn``), with the radiograph augmentation both trainers use (``train.augment``). The output folder is
a whole ``PaliGemmaForConditionalGeneration`` (pre-trained tower, language model still random) plus its processor,
so ``train.sft --model_name_or_path FOLDER`` starts the VLM from it; its ``training_config.json`` becomes the first
stage of the model's lineage. The head is kept apart (``pixel_head.safetensors``) only so that the tower can be
scored on its own (``TowerSegmenter``, e.g. with ``eval.real_eval``); no released model carries it.

``--init_from FOLDER`` continues the tower of a VLM that already answers (a ``train.sft`` output) instead of a new
one: its language model is kept as it is, and after the tower has trained its projector is re-fitted by least
squares (``fit_projector``) so that the new tower's tokens reach the language model where the old tower's did. The
record nests the folder's lineage, so this run is one more stage of that model; ``train.sft`` then goes on from it.

Image convention: the processor's, [B, 3, S, S] in [-1, 1] (grey repeated over RGB), frontal views in radiological
convention; masks [C, S, S] in {0, 1} at the tower's input side S. A killed run resumes from ``checkpoint.pt``.
"""

from __future__ import annotations

import copy
import itertools
import json
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from chexanatomy.cli import MISSING_INPUT, parse_config, prog_name, run_main
from chexanatomy.inference import Prediction, grey_image, paligemma_of, resolve_names
from chexanatomy.masks import grey_levels, tight_box
from chexanatomy.training_record import read_training_record, vision_pretrain_record

from .augment import RadiographAugmentation, augment_radiograph
from .tiny_paligemma import TinySpec, build_model, build_processor
from .unet import default_structures, loss_fn, row_tensors

HEAD_FILE = "pixel_head.safetensors"
CHECKPOINT = "checkpoint.pt"


class PixelHead(torch.nn.Module):
    """Linear map from each patch token [D] to a ``cells`` x ``cells`` grid of every structure's logits.

    [B, N, D] -> [B, C, g * cells, g * cells] for N = g^2 tokens in the tower's row-major patch order. With 16 px
    patches and 4 cells a cell is 4 x 4 input pixels: a mask map at a quarter of the input side, 16 times cheaper to
    score than one logit per pixel, and enough for the tower to learn where every structure is.
    """

    def __init__(self, hidden: int, cells: int, structures: list[str], grid: int = 0):
        super().__init__()
        self.cells, self.structures = cells, list(structures)
        self.proj = torch.nn.Linear(hidden, len(structures) * cells * cells)
        self.position = None
        if grid:
            self.add_position(grid)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Patch tokens [B, N, D] -> per-structure logits [B, C, g * cells, g * cells]."""
        b, n, _ = tokens.shape
        g, p, c = int(round(n**0.5)), self.cells, len(self.structures)
        x = self.proj(tokens).view(b, g, g, c, p, p)
        return x.permute(0, 3, 1, 4, 2, 5).reshape(b, c, g * p, g * p)

    def add_position(self, grid: int) -> None:
        """Give the head a position reader for a ``grid`` x ``grid`` token map (kept if it has one already)."""
        if self.position is None:
            self.position = torch.nn.Linear(self.proj.in_features, 2 * grid)

    def position_loss(self, tokens: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of reading each patch token's own row and column [B, N, D] -> scalar (log g: guessing).

        A language model finds a structure's box by attending to the tokens that show it and reading where they
        are; it can do that only if the tokens still say where they are after the tower's layers (a pre-trained
        SigLIP's do). A dense task alone lets the tower forget it: each token then only has to describe its own
        patch. This linear reader keeps the row and column (0 at the top / image left) linearly readable.
        """
        if self.position is None:
            raise ValueError("this pixel head has no position reader (add_position)")
        b, n, _ = tokens.shape
        g = self.position.out_features // 2
        if n != g * g:
            raise ValueError(f"the position reader is for {g} x {g} tokens, got {n}")
        logits = self.position(tokens).view(b * n, 2, g)
        index = torch.arange(n, device=tokens.device)
        target = torch.stack([index // g, index % g], dim=1).repeat(b, 1)  # [B * N, 2]: row, column
        return F.cross_entropy(logits.flatten(0, 1), target.flatten())


def tower_of(model):
    """The SigLIP vision tower inside a ``PaliGemmaForConditionalGeneration`` (or a ``PeftModel`` wrapping one)."""
    return paligemma_of(model).model.vision_tower


def tower_logits(tower, head: PixelHead, pixels: torch.Tensor) -> torch.Tensor:
    """Per-structure logits [B, C, s, s] (s: the head's map side) for processor-normalised pixels [B, 3, S, S]."""
    return head(tower(pixel_values=pixels).last_hidden_state)


def dense_loss(tower, head: PixelHead, images: torch.Tensor, targets: torch.Tensor,
               position_weight: float = 0.0) -> tuple[torch.Tensor, dict]:  # fmt: skip
    """The tower's dense pre-training loss on one batch, and its parts as floats.

    ``images`` [B, 1, S, S] in [0, 1], ``targets`` [B, C, s, s] in [0, 1] (``AugmentedBatches``). The loss is the
    pixel head's Dice + BCE (``train.unet.loss_fn``) plus ``position_weight`` x ``PixelHead.position_loss``.
    Returns ``(loss, {"dense_loss": ..., "position_loss": ...})``, the second only when the weight is not 0.
    """
    tokens = tower(pixel_values=to_pixels(images)).last_hidden_state
    return head_loss(head, tokens, targets, position_weight)


def head_loss(head: PixelHead, tokens: torch.Tensor, targets: torch.Tensor,
              position_weight: float = 0.0) -> tuple[torch.Tensor, dict]:  # fmt: skip
    """:func:`dense_loss` on the tower's patch tokens [B, N, D] already computed (a frozen tower's, for one)."""
    loss = loss_fn(head(tokens), targets)
    parts = {"dense_loss": float(loss.detach())}
    if position_weight:
        position = head.position_loss(tokens)
        parts["position_loss"] = float(position.detach())
        loss = loss + position_weight * position
    return loss, parts


def tower_input(image: Image.Image | np.ndarray, size: int) -> torch.Tensor:
    """A radiograph (any mode or dtype ``grey_image`` reads) -> the tower's input [1, 3, size, size] in [-1, 1]."""
    x = torch.from_numpy(grey_levels(grey_image(image)))[None, None]
    return to_pixels(F.interpolate(x, size=(size, size), mode="bilinear", antialias=True))


@torch.no_grad()
def position_readability(tower, pixels: torch.Tensor) -> dict:
    """How well a linear probe reads each patch token's own row and column: held-out R^2 (1: exactly, 0: not).

    ``pixels`` [B, 3, S, S] (processor-normalised). The probe (least squares with a bias) is fitted on the tokens
    of the even-numbered images and scored on the odd ones. A pre-trained SigLIP's tokens keep their position; a
    tower trained only on a dense task may not (see ``PixelHead.position_loss``).

    Raises:
        ValueError: fewer than 2 (D + 1) tokens to fit on (the probe would fit noise): give more images.
    """
    tokens = tower(pixel_values=pixels).last_hidden_state.double()  # [B, N, D]
    b, n, d = tokens.shape
    if (b + 1) // 2 * n < 2 * (d + 1):
        raise ValueError(f"{b} images of {n} tokens are too few to fit a probe of {d + 1} weights per output")
    g = int(round(n**0.5))
    index = torch.arange(n)
    where = torch.stack([index // g, index % g], dim=1).double().expand(b, n, 2)
    design = torch.cat([tokens, torch.ones(b, n, 1, dtype=tokens.dtype)], dim=2)
    fit, held = design[0::2].flatten(0, 1), design[1::2].flatten(0, 1)
    solution = torch.linalg.lstsq(fit, where[0::2].flatten(0, 1)).solution
    truth = where[1::2].flatten(0, 1)
    r2 = 1 - (truth - held @ solution).pow(2).sum(0) / (truth - truth.mean(0)).pow(2).sum(0)
    return {"row": round(float(r2[0]), 3), "column": round(float(r2[1]), 3)}


def to_pixels(images: torch.Tensor) -> torch.Tensor:
    """Grey images [B, 1, S, S] in [0, 1] -> the processor's input [B, 3, S, S] in [-1, 1] (mean 0.5, std 0.5)."""
    return (images.expand(-1, 3, -1, -1) - 0.5) / 0.5


@dataclass
class VisionPretrainConfig:
    """Options of ``python -m train.vision_pretrain``."""

    corpus_dir: str = field(default="outputs/drr40", metadata={"help": "Corpus folder or Hub dataset id."})
    output_dir: str = field(default="outputs/tiny_vlm_tower", metadata={"help": "Where the PaliGemma folder goes."})
    image_size: int = field(default=128, metadata={"help": "The tower's input side in pixels (TinySpec)."})
    vision_layers: int = field(default=4, metadata={"help": "SigLIP layers (TinySpec)."})
    text_layers: int = field(default=4, metadata={"help": "Gemma 2 layers of the (untrained) language model."})
    hidden: int = field(default=192, metadata={"help": "Width of tower and language model (TinySpec)."})
    heads: int = field(default=4, metadata={"help": "Attention heads of tower and language model (TinySpec)."})
    max_steps: int = field(default=1500, metadata={"help": "Optimiser steps."})
    max_minutes: float = field(
        default=0.0,
        metadata={"help": "Also stop after this many minutes (0: no limit); the schedule then follows the clock."},
    )
    batch_size: int = field(default=16, metadata={"help": "Images per step."})
    learning_rate: float = field(default=1e-3, metadata={"help": "AdamW peak learning rate (warm-up, cosine decay)."})
    cells: int = field(default=4, metadata={"help": "Head output cells per patch side (mask map side: S / 16 * N)."})
    num_workers: int = field(
        default=1, metadata={"help": "Processes augmenting batches beside the training step (0: in the main one)."}
    )
    save_steps: int = field(default=250, metadata={"help": "Write the resumable checkpoint every N steps."})
    logging_steps: int = field(default=25, metadata={"help": "Log the loss every N steps."})
    seed: int = field(default=0, metadata={"help": "Seed."})
    init_from: str = field(
        default="",
        metadata={"help": "A VLM folder whose tower to continue, keeping its language model (sizes: the folder's)."},
    )
    position_weight: float = field(
        default=0.0,
        metadata={"help": "Also train every patch token to say its own row and column, with this weight "
                          "(PixelHead.position_loss). 0: off."},
    )
    projector_images: int = field(
        default=512, metadata={"help": "With --init_from: augmented corpus images the projector is re-fitted on."}
    )

    def __post_init__(self):
        if min(self.max_steps, self.batch_size, self.save_steps, self.logging_steps) < 1:
            raise ValueError("max_steps, batch_size, save_steps and logging_steps must be at least 1")
        if not (self.learning_rate > 0 and np.isfinite(self.learning_rate)):
            raise ValueError(f"--learning_rate must be a positive number, got {self.learning_rate}")
        if not (self.position_weight >= 0 and np.isfinite(self.position_weight)):
            raise ValueError(f"--position_weight must be a finite number >= 0, got {self.position_weight}")

    def spec(self) -> TinySpec:
        """The tiny model's sizes."""
        return TinySpec(image_size=self.image_size, vision_layers=self.vision_layers, text_layers=self.text_layers,
                        hidden=self.hidden, heads=self.heads)  # fmt: skip


def _schedule(progress: float) -> float:
    """Learning-rate factor at ``progress`` in [0, 1] of the run: linear warm-up over the first 5 %, cosine to 0."""
    if progress < 0.05:
        return max(progress / 0.05, 0.01)
    return 0.5 * (1 + np.cos(np.pi * min(1.0, (progress - 0.05) / 0.95)))


def _save_checkpoint(out: Path, tower, head, optimiser, step: int, history: list, seconds: float) -> None:
    tmp = out / (CHECKPOINT + ".tmp")
    state = {"tower": tower.state_dict(), "head": head.state_dict(), "optimiser": optimiser.state_dict(),
             "step": step, "history": history, "seconds": seconds}  # fmt: skip
    torch.save(state, tmp)
    tmp.replace(out / CHECKPOINT)


def pretrain(config: VisionPretrainConfig) -> dict:
    """Pre-train the tower; save the PaliGemma folder, the head and the record. Returns the last logged metrics."""
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    rows = datasets.load_dataset(config.corpus_dir)["train"]
    structures = default_structures(rows["structures"])
    model, processor = starting_model(config)
    config = sizes_of(model, config)
    before = copy.deepcopy(model.model).eval() if config.init_from else None  # what the language model reads now
    tower = tower_of(model).train()
    grid = config.image_size // TinySpec.patch_size if config.position_weight else 0
    head = PixelHead(config.hidden, config.cells, structures, grid)
    params = [*tower.parameters(), *head.parameters()]
    optimiser = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=0.01)
    step, history, seconds_before = 0, [], 0.0
    if (out / CHECKPOINT).is_file():
        state = torch.load(out / CHECKPOINT, weights_only=False)  # our own file, written by _save_checkpoint
        tower.load_state_dict(state["tower"])
        head.load_state_dict(state["head"])
        optimiser.load_state_dict(state["optimiser"])
        step, history, seconds_before = state["step"], state["history"], state["seconds"]
        print(f"resumed from {out / CHECKPOINT} at step {step}")
    cached = [(image, target.to(torch.uint8)) for image, target in
              (row_tensors(r, structures, config.image_size) for r in rows)]  # fmt: skip
    side = config.image_size // TinySpec.patch_size * config.cells
    batches = AugmentedBatches(cached, config.batch_size, config.seed, side, first_step=step)
    if config.num_workers:
        batches = torch.utils.data.DataLoader(batches, batch_size=None, num_workers=config.num_workers)
    start = time.monotonic() - seconds_before  # a resumed run's clock continues
    for images, targets in batches:
        if step >= config.max_steps:
            break
        # With a time limit, the run's progress is whichever of steps and minutes is further along.
        minutes = (time.monotonic() - start) / 60
        progress = max(step / config.max_steps, minutes / config.max_minutes if config.max_minutes else 0.0)
        for group in optimiser.param_groups:
            group["lr"] = config.learning_rate * _schedule(progress)
        loss, parts = dense_loss(tower, head, images, targets, config.position_weight)
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimiser.step()
        step += 1
        if step % config.logging_steps == 0 or step == config.max_steps:
            history.append({"step": step, "loss": round(float(loss.detach()), 5),
                            **{k: round(v, 5) for k, v in parts.items() if k != "dense_loss"},
                            "minutes": round((time.monotonic() - start) / 60, 2)})  # fmt: skip
            print(json.dumps(history[-1]), flush=True)
        if step % config.save_steps == 0:
            _save_checkpoint(out, tower, head, optimiser, step, history, time.monotonic() - start)
        if config.max_minutes and time.monotonic() - start > 60 * config.max_minutes:
            break
    fit = None
    if before is not None:
        tower.eval()
        images = itertools.islice(AugmentedBatches(cached, config.batch_size, config.seed + 1, side),
                                  -(-config.projector_images // config.batch_size))  # fmt: skip
        fit = fit_projector(model.model, before, (to_pixels(x) for x, _ in images))
        print(json.dumps({"projector_fit": fit}), flush=True)
    _save_outputs(out, model, processor, head, config, step, history, fit)
    return history[-1] if history else {"step": step}


def starting_model(config: VisionPretrainConfig):
    """``(PaliGemmaForConditionalGeneration, processor)``: a new tiny one, or the ``--init_from`` folder's.

    Raises:
        FileNotFoundError: when ``--init_from`` is no model folder.
    """
    if not config.init_from:
        processor = build_processor(config.spec())
        return build_model(processor, config.spec(), seed=config.seed), processor
    from transformers import AutoModelForImageTextToText, AutoProcessor

    folder = Path(config.init_from)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"--init_from {config.init_from}: no model folder (no config.json there)")
    model = AutoModelForImageTextToText.from_pretrained(str(folder), attn_implementation="eager")
    return model, AutoProcessor.from_pretrained(str(folder))


def sizes_of(model, config: VisionPretrainConfig) -> VisionPretrainConfig:
    """``config`` with the sizes the model really has (an ``--init_from`` folder's, whatever the options said)."""
    vision, text = model.config.vision_config, model.config.text_config
    return replace(config, image_size=vision.image_size, vision_layers=vision.num_hidden_layers,
                   text_layers=text.num_hidden_layers, hidden=vision.hidden_size,
                   heads=vision.num_attention_heads)  # fmt: skip


@torch.no_grad()
def fit_projector(vlm, before, pixel_batches) -> dict:
    """Re-fit ``vlm``'s projector so its new tower's tokens land where ``before`` (the model as it was) put them.

    ``vlm`` and ``before`` are ``PaliGemmaModel``s (``model.model``) of the same shape; ``pixel_batches`` yields
    processor-normalised images [B, 3, S, S]. The projector's linear layer becomes the least-squares map from the new
    tower's patch tokens [D] to the old projector's output for the old tower's tokens of the same images, so the
    language model, trained on the old tower, reads the new one from the first step. Returns the fit's R^2 over all
    outputs (1: exact) beside the R^2 of leaving the projector as it was (``r2_unchanged``).
    """
    new_tokens, targets = [], []
    for pixels in pixel_batches:
        new_tokens.append(vlm.vision_tower(pixel_values=pixels).last_hidden_state.flatten(0, 1))
        old = before.vision_tower(pixel_values=pixels).last_hidden_state
        targets.append(before.multi_modal_projector(old).flatten(0, 1))
    x, y = torch.cat(new_tokens).double(), torch.cat(targets).double()
    linear = vlm.multi_modal_projector.linear

    def r2(prediction: torch.Tensor) -> float:
        return round(float(1 - (y - prediction).pow(2).sum() / (y - y.mean(0)).pow(2).sum()), 4)

    unchanged = r2(vlm.multi_modal_projector(x.float()).double())
    design = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
    solution = torch.linalg.lstsq(design, y).solution  # [D + 1, P]
    linear.weight.copy_(solution[:-1].T.to(linear.weight.dtype))
    linear.bias.copy_(solution[-1].to(linear.bias.dtype))
    condition_projector(vlm)
    return {"r2": r2(design @ solution), "r2_unchanged": unchanged, "tokens": len(x)}


@torch.no_grad()
def condition_projector(vlm) -> dict:
    """Remove from the projector's weight the one direction its input never has; the model's function is unchanged.

    ``vlm`` is a ``PaliGemmaModel`` (``model.model``) whose tower ends in a LayerNorm (SigLIP's ``post_layernorm``,
    weight g, bias b): every token x it passes on has sum_i (x_i - b_i) / g_i = 0, so the projector's weight component
    along n = 1 / g multiplies nothing. A least-squares fit (``fit_projector``) can leave it huge (1e4 per column
    was seen): the image tokens then come from float32 cancellation, break in bfloat16, and any change of the tower
    gives gradients of 1e3 that swamp the language model's under gradient clipping. Projecting it out (and moving
    its constant part into the bias) is exact. Returns the weight's Frobenius norm ``before`` and ``after``.
    """
    linear, norm = vlm.multi_modal_projector.linear, vlm.vision_tower.post_layernorm
    weight, n, shift = linear.weight.double(), 1 / norm.weight.double(), norm.bias.double()
    along = weight @ n / (n @ n)  # [P]
    before = float(weight.norm())
    linear.weight.copy_((weight - torch.outer(along, n)).to(linear.weight.dtype))
    linear.bias.add_((along * (n @ shift)).to(linear.bias.dtype))
    return {"before": round(before, 3), "after": round(float(linear.weight.norm()), 3)}


class AugmentedBatches(torch.utils.data.IterableDataset):
    """Endless batches ``(images [B, 1, S, S] in [0, 1], targets [B, C, s, s] in [0, 1])`` of augmented cached rows.

    Targets are the augmented masks averaged over cells (the share of each cell inside the structure), on an
    s x s map. Batch i draws from its own generator, seeded by ``(seed, i)``: a run resumed at step k gets the
    batches k, k + 1, ... that the uninterrupted run would have had, in a worker process or not.
    """

    def __init__(self, cached: list, batch_size: int, seed: int, map_side: int, first_step: int = 0,
                 augmentation: RadiographAugmentation | None = None):  # fmt: skip
        self.cached, self.batch_size, self.seed, self.map_side = cached, batch_size, seed, map_side
        self.first_step, self.augmentation = first_step, augmentation or RadiographAugmentation()

    def __iter__(self):
        for i in itertools.count(self.first_step):
            rng = random.Random(f"{self.seed}/{i}")
            picked = [self.cached[rng.randrange(len(self.cached))] for _ in range(self.batch_size)]
            batch = [augment_radiograph(image, target.float(), rng, self.augmentation) for image, target in picked]
            images, targets = (torch.stack(t) for t in zip(*batch, strict=True))
            yield images, F.adaptive_avg_pool2d(targets, self.map_side)


def _save_outputs(out: Path, model, processor, head: PixelHead, config, step: int, history: list, fit) -> None:
    model.eval().save_pretrained(out)
    processor.save_pretrained(out)
    if config.init_from and (Path(config.init_from) / "mask_codec").is_dir():  # the answers' codec goes on with them
        shutil.copytree(Path(config.init_from) / "mask_codec", out / "mask_codec", dirs_exist_ok=True)
    save_pixel_head(head, out / HEAD_FILE)
    previous = read_training_record(config.init_from) if config.init_from else None
    outcome = {"steps_done": step, **({"projector_fit": fit} if fit else {})}
    vision_pretrain_record(asdict(config), previous, **outcome).save(out)
    (out / "training_metrics.json").write_text(json.dumps(history) + "\n", encoding="utf-8")
    (out / CHECKPOINT).unlink(missing_ok=True)


def save_pixel_head(head: PixelHead, path: str | Path) -> None:
    """Write ``head`` to ``path`` (safetensors; its structures and cells in the metadata)."""
    from safetensors.torch import save_file

    tensors = {k: v.contiguous() for k, v in head.state_dict().items()}
    save_file(tensors, str(path), metadata={"structures": json.dumps(head.structures), "cells": str(head.cells)})


def load_pixel_head(path: str | Path) -> PixelHead:
    """The :class:`PixelHead` in ``path``: a ``pixel_head.safetensors`` file or a folder holding one.

    Raises:
        FileNotFoundError: when there is none (a folder not written by this module or ``train.dense_aux``).
    """
    from safetensors import safe_open

    path = Path(path)
    path = path / HEAD_FILE if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no pixel head (train.vision_pretrain writes {HEAD_FILE})")
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    cells, structures = int(meta["cells"]), json.loads(meta["structures"])
    grid = state["position.weight"].shape[0] // 2 if "position.weight" in state else 0
    head = PixelHead(state["proj.weight"].shape[1], cells, structures, grid)
    head.load_state_dict(state)
    return head


class TowerSegmenter:
    """A pre-trained tower with its pixel head as a ``chexanatomy.inference.Segmenter`` (sigmoid > 0.5 per channel).

    For choosing between tower recipes (``eval.real_eval.evaluate_on_real`` scores it like any model); the head is
    thrown away after this stage.
    """

    kind = "tower"

    def __init__(self, folder: str | Path):
        from transformers import AutoModelForImageTextToText

        self.head = load_pixel_head(folder)
        self.structures = self.head.structures
        model = AutoModelForImageTextToText.from_pretrained(str(folder), attn_implementation="eager")
        self.tower = tower_of(model).eval()
        self.size = model.config.vision_config.image_size

    @torch.no_grad()
    def segment(self, image: Image.Image | np.ndarray, structures: list[str] | None = None) -> dict[str, Prediction]:
        """See ``chexanatomy.inference.Segmenter.segment``."""
        names = resolve_names(structures, self.structures)
        grey = grey_image(image)
        logits = tower_logits(self.tower, self.head, tower_input(grey, self.size))
        logits = F.interpolate(logits, size=(grey.size[1], grey.size[0]), mode="bilinear")[0]
        out = {}
        for name in names:
            mask = (logits[self.structures.index(name)] > 0).numpy()
            out[name] = Prediction(name, mask, tight_box(mask))
        return out


def main(argv: list[str] | None = None) -> int:
    """``python -m train.vision_pretrain``: 0 when trained, 2 on a usage error (one line)."""
    return run_main(_main, argv, errors=MISSING_INPUT)


def _main(argv: list[str]) -> int:
    config = parse_config(VisionPretrainConfig, argv, prog_name("train.vision_pretrain"), __doc__)
    print(f"vision tower pre-trained -> {config.output_dir}: {pretrain(config)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
