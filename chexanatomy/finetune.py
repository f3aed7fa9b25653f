"""Fine-tuning PaliGemma on answers, shared by the anatomy trainer (``train.sft``) and the few-shot study (``eval``).

* :func:`suffix_batch`: prompt, image and answer -> the processor's training batch (the answer goes in as
  ``suffix``: its tokens get ``token_type_ids`` 1 and are the only labels; everything else is -100).
* :func:`answer_only_loss`: the causal LM loss with logits computed only where there are labels.
* :func:`prepare_sft_config` and :func:`answer_only_trainer_class`: TRL's ``SFTTrainer`` set up for both
  (imports TRL only when called, so the loss runs on a machine with torch and transformers alone).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch


def suffix_batch(processor, prompts: list[str], images: list, answers: list[str]):
    """The processor's padded ``[B, L]`` training batch for ``<image>`` + each prompt, answered by each answer.

    Returns the ``BatchFeature`` with ``input_ids``, ``attention_mask``, ``token_type_ids`` (1 on the answer and its
    ``<eos>``), ``labels`` (-100 except on answer positions) and ``pixel_values`` ``[B, 3, H, W]``.
    """
    return processor(
        text=["<image>" + p for p in prompts],
        images=images,
        suffix=answers,
        return_tensors="pt",
        padding="longest",
    )


def answer_positions(labels: torch.Tensor) -> torch.Tensor:
    """Sequence positions whose logits predict a labelled token in any row: t where ``labels[:, t + 1] != -100``."""
    return (labels[:, 1:] != -100).any(0).nonzero().squeeze(1)


@dataclass(frozen=True)
class LocSmoothing:
    """Soft targets at ``<loc>`` positions: a Gaussian over the ``count`` bins, ``sigma`` bins wide.

    Attributes:
        first_id: the id of ``<loc0000>`` (the ``count`` ids are consecutive).
        count: the number of bins (1,024).
        sigma: the Gaussian's standard deviation in bins (> 0).
    """

    first_id: int
    count: int
    sigma: float

    def __post_init__(self):
        if not (self.sigma > 0 and math.isfinite(self.sigma)):
            raise ValueError(f"loc_sigma must be a positive number of bins, got {self.sigma}")

    def targets(self, bins: torch.Tensor) -> torch.Tensor:
        """[M, count] target distributions (rows sum to 1) for reference bins [M] in 0..count-1."""
        grid = torch.arange(self.count, device=bins.device, dtype=torch.float32)
        weights = torch.exp(-0.5 * ((grid[None] - bins[:, None].float()) / self.sigma) ** 2)
        return weights / weights.sum(1, keepdim=True)


def answer_only_loss(model, inputs: dict, loc_smoothing: LocSmoothing | None = None, seg_shape=None) -> torch.Tensor:
    """Causal LM loss computing logits only at answer positions.

    The 257k-entry vocabulary makes full logits (image and prompt positions included) a large part of the memory
    (docs/anchors.md); PaliGemma's ``logits_to_keep`` accepts the positions to keep, so the LM head runs on those only.
    Equal to the model's own loss (tested) without ``loc_smoothing``; with it, the term of each ``<loc>`` target is
    the cross-entropy against ``LocSmoothing.targets`` (the mean is still over all answer tokens). ``seg_shape``
    (``train.seg_shape.SegShapeLoss``: a callable of the kept positions' logits [M, V] and targets [M], -100 where
    unlabelled, in reading order) adds its term to the mean.
    """
    labels = inputs["labels"]
    keep = answer_positions(labels)
    forward = {k: v for k, v in inputs.items() if k != "labels"}
    logits = model(**forward, logits_to_keep=keep).logits  # [B, K, V]
    targets = labels[:, keep + 1].flatten()
    logits = logits.flatten(0, 1)
    if loc_smoothing is None:
        loss = torch.nn.functional.cross_entropy(logits.float(), targets, ignore_index=-100)
    else:
        loss = _smoothed_loss(logits, targets, loc_smoothing)
    return loss if seg_shape is None else loss + seg_shape(logits, targets)


def _smoothed_loss(logits: torch.Tensor, targets: torch.Tensor, loc_smoothing: LocSmoothing) -> torch.Tensor:
    """Mean cross-entropy of ``logits`` [M, V] against ``targets`` [M] (-100: none), soft at ``<loc>`` targets."""
    log_p = torch.log_softmax(logits.float(), -1)[targets != -100]
    targets = targets[targets != -100]
    losses = -log_p.gather(1, targets[:, None])[:, 0]
    first, count = loc_smoothing.first_id, loc_smoothing.count
    is_loc = (targets >= first) & (targets < first + count)
    if is_loc.any():
        soft = loc_smoothing.targets(targets[is_loc] - first)
        losses = losses.masked_scatter(is_loc, -(soft * log_p[is_loc, first : first + count]).sum(1))
    return losses.mean()


def prepare_sft_config(config):
    """The settings PaliGemma needs whatever the recipe says (docs/environment.md): our collator, no TRL packing.

    ``config`` is a ``trl.SFTConfig``; it is changed in place and returned. Without CUDA, bf16/fp16 and gradient
    checkpointing are turned off.
    """
    config.remove_unused_columns = False
    config.dataset_kwargs = {**(config.dataset_kwargs or {}), "skip_prepare_dataset": True}
    config.packing = False
    if not torch.cuda.is_available():
        config.bf16, config.fp16, config.gradient_checkpointing = False, False, False
    return config


@functools.cache
def answer_only_trainer_class():
    """``trl.SFTTrainer`` whose training loss is :func:`answer_only_loss` (TRL is imported here, once)."""
    from trl import SFTTrainer

    class AnatomySFTTrainer(SFTTrainer):
        """``SFTTrainer`` whose loss computes logits only where there are labels (see ``answer_only_loss``)."""

        loc_smoothing: LocSmoothing | None = None  # soft <loc> targets (train.loc_prior), set per trainer
        seg_shape = None  # the <seg> codes' shape loss (train.seg_shape.SegShapeLoss), set per trainer

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            """The scalar training loss (cross-entropy over answer tokens) of one batch.

            With ``return_outputs`` (evaluation paths that want logits) TRL's own computation runs and returns
            ``(loss, outputs)``; otherwise only the loss tensor, from ``answer_only_loss``.
            """
            if return_outputs:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            return answer_only_loss(model, inputs, self.loc_smoothing, self.seg_shape)

        def log(self, logs, start_time=None):
            """The Trainer's log, with the mean shape loss since the last one beside the training loss."""
            if self.seg_shape is not None and "loss" in logs:
                logs = {**logs, **self.seg_shape.mean_recent()}
            super().log(logs, start_time)

    return AnatomySFTTrainer


__all__ = [
    "LocSmoothing", "answer_only_loss", "answer_only_trainer_class", "answer_positions", "prepare_sft_config",
    "suffix_batch",
]  # fmt: skip
