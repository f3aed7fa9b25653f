#!/usr/bin/env bash
# Re-train the bundled demonstration models (chexanatomy/assets/models/) from nothing, on CPU: the 40-subject embedded
# corpus, the tiny VLM in three stages and the U-Net, then their test-split figures. About 4 hours on 2 cores
# (corpus 8 min, VLM 51 + 51 + 48 min, U-Net 72 min); on a GPU add --device/--bf16 flags as the recipes say.
#   bash scripts/train_bundled.sh && cp -r outputs/tiny_vlm/. chexanatomy/assets/models/tiny_vlm/ ...
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
PY="$VENV/bin/python"
"$PY" -m dataset_builder build --config dataset_builder/recipes/embedded.yaml      # outputs/drr: the default corpus
"$PY" -m dataset_builder build --config dataset_builder/recipes/embedded40.yaml    # outputs/drr40: 40 pseudo-subjects
# VLM stage 1: from scratch on the 10-subject corpus; stages 2 and 3: continue on 40 subjects (lr 5e-4, then 3e-4).
"$PY" -m train.sft --config train/recipes/tiny_bundled.yaml --corpus_dir outputs/drr --output_dir outputs/tiny_vlm_stage1
"$PY" -m train.sft --config train/recipes/tiny_bundled_stage2.yaml --model_name_or_path outputs/tiny_vlm_stage1 \
    --corpus_dir outputs/drr40 --output_dir outputs/tiny_vlm_stage2
"$PY" -m train.sft --config train/recipes/tiny_bundled_stage2.yaml --model_name_or_path outputs/tiny_vlm_stage2 \
    --corpus_dir outputs/drr40 --output_dir outputs/tiny_vlm --learning_rate 3e-4
"$PY" -m train.unet --config train/recipes/unet_bundled.yaml --corpus_dir outputs/drr40 --output_dir outputs/unet
# The goal figures on the default corpus's test split and on the 40-subject corpus's (four held-out subjects).
"$PY" bench/bench_bundled_models.py --vlm outputs/tiny_vlm --unet outputs/unet --corpus_dir outputs/drr
"$PY" bench/bench_bundled_models.py --vlm outputs/tiny_vlm --unet outputs/unet --corpus_dir outputs/drr40 --tag drr40
