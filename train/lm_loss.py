"""The LoRA targets of fine-tuning, apart from ``train/sft.py`` so that they need neither TRL nor datasets.

The training-step benchmark (``bench/bench_sft.py``) runs on a machine that has only torch, transformers and peft;
the answer-only loss it times is ``chexanatomy.finetune.answer_only_loss``.
"""

from __future__ import annotations

# The paper's LoRA: r=16 on every attention and MLP projection of the language model.
LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
VISION_LORA_TARGETS = r".*vision_tower.*\.(q_proj|k_proj|v_proj|out_proj|fc1|fc2)"  # --train_vision with LoRA
