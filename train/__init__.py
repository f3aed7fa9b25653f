"""Training: the mask codec (``train.codec``), PaliGemma LoRA fine-tuning and the U-Net baseline."""
