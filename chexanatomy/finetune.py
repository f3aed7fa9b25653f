"""Fine-tuning PaliGemma on answers, shared by the anatomy trainer (``train.sft``) and the few-shot study (``eval``).

* :func:`suffix_batch`: prompt, image and answer -> the processor's training batch (the answer goes in as
  ``suffix``: its tokens get ``token_type_ids`` 1 and are the only labels; everything else is -100).
* :func:`answer_only_loss`: the causal LM loss with logits computed only where there are labels.
* :func:`prepare_sft_config` and :func:`answer_only_trainer_class`: TRL's ``SFTTrainer`` set up for both
  (imports TRL only when called, so the loss runs on a machine with torch and transformers alone).
"""

from __future__ import annotations

import functools

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


def answer_only_loss(model, inputs: dict) -> torch.Tensor:
    """Causal LM loss computing logits only at answer positions.

    The 257k-entry vocabulary makes full logits (image and prompt positions included) a large part of the memory
    (docs/anchors.md); PaliGemma's ``logits_to_keep`` accepts the positions to keep, so the LM head runs on those only.
    Equal to the model's own loss (tested).
    """
    labels = inputs["labels"]
    keep = answer_positions(labels)
    forward = {k: v for k, v in inputs.items() if k != "labels"}
    logits = model(**forward, logits_to_keep=keep).logits  # [B, K, V]
    targets = labels[:, keep + 1]
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100)


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

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            """The scalar training loss (cross-entropy over answer tokens) of one batch.

            With ``return_outputs`` (evaluation paths that want logits) TRL's own computation runs and returns
            ``(loss, outputs)``; otherwise only the loss tensor, from ``answer_only_loss``.
            """
            if return_outputs:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            return answer_only_loss(model, inputs)

    return AnatomySFTTrainer


__all__ = ["answer_only_loss", "answer_only_trainer_class", "answer_positions", "prepare_sft_config", "suffix_batch"]
