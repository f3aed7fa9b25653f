"""The language-model side of fine-tuning that needs neither TRL nor datasets: LoRA targets and the answer-only loss.

Kept apart from ``train/sft.py`` so that the training-step benchmark (``bench/bench_sft.py``) runs on a machine that
has only torch, transformers and peft.
"""

from __future__ import annotations

import torch

# The paper's LoRA: r=16 on every attention and MLP projection of the language model.
LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
VISION_LORA_TARGETS = r".*vision_tower.*\.(q_proj|k_proj|v_proj|out_proj|fc1|fc2)"  # --train_vision with LoRA


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
