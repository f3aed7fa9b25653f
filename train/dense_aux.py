"""The dense loss of ``train.vision_pretrain`` kept on while the VLM learns to answer (``train.sft --dense_weight``).

A tower pre-trained to see (``train.vision_pretrain``) and then frozen leaves all the reading to the language model;
trained on the answer loss alone it drifts from what it saw. With ``--train_vision true --dense_weight W`` every
training step adds ``W`` x the pre-training loss (``train.unet.loss_fn``: Dice + BCE of the pixel head over the
tower's patch tokens) on its own batch of augmented corpus images (``train.vision_pretrain.AugmentedBatches``, the
radiograph augmentation), so the tower keeps seeing every structure while it learns what the answers need.
``--vision_lr_scale`` trains the tower at a fraction of the language model's learning rate. ``--position_weight``
adds the head's position loss (``train.vision_pretrain.PixelHead.position_loss``): the tokens keep saying where
they are, which is what the language model needs to place a box.

The pixel head starts from ``pixel_head.safetensors`` of ``--dense_head`` (default: the model folder, as
``train.vision_pretrain`` writes it), trains at the run's learning rate, and is written beside every checkpoint
(a resumed run continues it) and into the output folder, so the tower can be scored on its own
(``train.vision_pretrain.TowerSegmenter``). Published folders do not carry it: ``--dense_head fit`` starts a new
head on every structure of the corpus and fits it on the frozen tower (``FIT_STEPS`` head-only steps) before the
first training step, so a published model can be continued with its dense loss on.
"""

from __future__ import annotations

from pathlib import Path

import datasets
import torch

from chexanatomy.finetune import answer_only_trainer_class

from .augment import RadiographAugmentation
from .tiny_paligemma import TinySpec
from .unet import default_structures, row_tensors
from .vision_pretrain import (
    HEAD_FILE,
    AugmentedBatches,
    PixelHead,
    VisionPretrainConfig,
    dense_loss,
    head_loss,
    load_pixel_head,
    save_pixel_head,
    to_pixels,
)

FIT_HEAD = "fit"  # --dense_head value: a new head fitted on the frozen tower
FIT_STEPS, FIT_LR = 300, 1e-2


class DenseAuxiliary:
    """The pixel head, its batches and the loss weight of the dense auxiliary task.

    Args:
        head_path: a ``pixel_head.safetensors`` file or the folder holding one; ``"fit"`` (``FIT_HEAD``): a new
            head, fitted on the tower as it is when the first dense loss is asked for (:meth:`fit_head`).
        corpus_dir: the corpus whose ``train`` split the dense batches come from (masks of the head's structures).
        image_size: the tower's input side S in pixels.
        weight: factor of the dense loss in the training loss.
        batch_size: images per dense batch.
        seed: seed of the batches (batch i is the same whenever the run is resumed).
        augmentation: the radiograph augmentation's ranges (the answers' own).
        position_weight: factor of the head's position loss (``PixelHead.position_loss``) inside the dense loss;
            a head without a position reader gets a new one. 0: off.
        hidden: the tower's token width (a new head's input).
    """

    def __init__(self, head_path: str | Path, corpus_dir: str, image_size: int, weight: float, batch_size: int,
                 seed: int, augmentation: RadiographAugmentation | None = None,
                 position_weight: float = 0.0, hidden: int = TinySpec.hidden):  # fmt: skip
        rows = datasets.load_dataset(corpus_dir)["train"]
        self.unfitted = str(head_path) == FIT_HEAD
        if self.unfitted:
            self.head = PixelHead(hidden, VisionPretrainConfig.cells, default_structures(rows["structures"]))
        else:
            self.head = load_pixel_head(head_path)
        self.position_weight = position_weight
        if position_weight:
            self.head.add_position(image_size // TinySpec.patch_size)
        self.weight, self.batch_size, self.seed, self.image_size = weight, batch_size, seed, image_size
        self.cached = [(image, target.to(torch.uint8)) for image, target in
                       (row_tensors(r, self.head.structures, image_size) for r in rows)]  # fmt: skip
        self.augmentation, self.batches = augmentation or RadiographAugmentation(), None
        self.recent: list[dict] = []  # the dense losses' parts since the last log

    def start_at(self, step: int) -> None:
        """Draw batches from batch ``step`` on (the one an uninterrupted run would have at that step)."""
        side = self.image_size // TinySpec.patch_size * self.head.cells
        self.batches = iter(AugmentedBatches(self.cached, self.batch_size, self.seed, side, step, self.augmentation))

    def loss(self, tower) -> torch.Tensor:
        """``weight`` x the dense loss of ``tower`` (a SigLIP vision model) on the next batch."""
        if self.unfitted:
            self.fit_head(tower)
        images, targets = next(self.batches)
        loss, parts = dense_loss(tower, self.head, images, targets, self.position_weight)
        self.recent.append(parts)
        return self.weight * loss

    def fit_head(self, tower, steps: int | None = None) -> list[float]:
        """Fit the head (and its position reader) on ``tower``'s tokens, the tower untouched; returns the losses.

        Adam at ``FIT_LR`` on batches of their own (seeded apart from the training's), in place: the optimiser that
        trains the head afterwards holds the same parameters and has not stepped yet.
        """
        steps = steps or FIT_STEPS
        side = self.image_size // TinySpec.patch_size * self.head.cells
        batches = iter(AugmentedBatches(self.cached, self.batch_size, f"fit/{self.seed}", side, 0, self.augmentation))
        optimiser = torch.optim.Adam(self.head.parameters(), lr=FIT_LR)
        losses = []
        for _ in range(steps):
            images, targets = next(batches)
            with torch.no_grad():
                tokens = tower(pixel_values=to_pixels(images)).last_hidden_state
            loss, _ = head_loss(self.head, tokens, targets, self.position_weight)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(float(loss.detach()))
        self.unfitted = False
        print(f"pixel head fitted on the tower: loss {losses[0]:.3f} -> {losses[-1]:.3f} in {steps} steps")
        return losses

    def mean_recent(self) -> dict:
        """Mean of each part of the dense loss since the last call (``dense_loss``, ``position_loss``; {}: no step)."""
        recent, self.recent = self.recent, []
        return {k: round(sum(r[k] for r in recent) / len(recent), 5) for k in (recent[0] if recent else {})}

    def save(self, folder: str | Path) -> None:
        """Write the head as ``folder/pixel_head.safetensors``."""
        save_pixel_head(self.head, Path(folder) / HEAD_FILE)


def dense_trainer_class():
    """The answer-only SFT trainer (``chexanatomy.finetune``) with the dense auxiliary loss and a tower lr scale.

    Set ``dense`` (a :class:`DenseAuxiliary`) and ``vision_lr_scale`` on the instance before training.
    """
    base = answer_only_trainer_class()

    class DenseAuxiliaryTrainer(base):
        """Answer loss + ``dense.loss`` of the vision tower; the tower at ``vision_lr_scale`` x the lr."""

        dense: DenseAuxiliary | None = None
        vision_lr_scale: float = 1.0

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            """The answer loss, plus the dense loss while training (see the module docstring)."""
            out = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            if return_outputs or self.dense is None or not model.training:
                return out
            if self.dense.batches is None:
                self.dense.start_at(self.state.global_step)
            return out + self.dense.loss(self.accelerator.unwrap_model(model).model.vision_tower)

        def create_optimizer(self, model=None):
            """The Trainer's optimiser with the tower's parameters in groups of their own (lr x ``vision_lr_scale``).

            The pixel head's parameters join at the run's learning rate.
            """
            optimiser = super().create_optimizer(model)
            names = {id(p): n for n, p in (model or self.model).named_parameters()}
            groups = []
            for group in optimiser.param_groups:
                params = group["params"]
                seeing = [p for p in params if _is_vision(names.get(id(p), ""))]
                rest = [p for p in params if not _is_vision(names.get(id(p), ""))]
                scaled = {**group, "params": seeing, "lr": group["lr"] * self.vision_lr_scale}
                groups += [{**group, "params": rest}, scaled]
            if self.dense is not None:
                groups.append({**optimiser.param_groups[0], "params": list(self.dense.head.parameters()),
                               "weight_decay": 0.0})  # fmt: skip
            optimiser.param_groups = []  # nothing has stepped yet: no state to carry over
            for group in groups:
                if group["params"]:
                    optimiser.add_param_group(group)
            return optimiser

        def _save_checkpoint(self, model, trial):
            super()._save_checkpoint(model, trial)
            if self.dense is not None:
                from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

                run_dir = Path(self._get_output_dir(trial=trial))
                self.dense.save(run_dir / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")

        def log(self, logs, start_time=None):
            """The Trainer's log, with the mean dense loss since the last one beside the training loss."""
            if self.dense is not None and "loss" in logs:
                logs = {**logs, **self.dense.mean_recent()}
            super().log(logs, start_time)

    return DenseAuxiliaryTrainer


def _is_vision(name: str) -> bool:
    return "vision_tower" in name


__all__ = ["DenseAuxiliary", "dense_trainer_class"]
