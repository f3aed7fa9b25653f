#!/usr/bin/env bash
# Re-train the bundled demonstration models (chexanatomy/assets/models/) from nothing, on CPU: the 40-subject embedded
# corpus, the tiny VLM in twelve stages and the U-Net in eight, then their test-split figures. About 15 hours on 2 cores
# (corpus 15 min, VLM 51 + 51 + 48 + 55 + 12 + 46 + 45 + 48 + 75 + 66 + 60 + 25 min, U-Net 72 + 15 + 28 + 28 + 26 + 75 + 28 + 21 min);
# on a GPU add --device/--bf16 flags as the recipes say. The shipped models ran their first stages (VLM 1-3, U-Net 1-5)
# on the format-1.0 corpus of commit 2358aad (plain DRRs), later ones on formats 2.0 and 2.1, and their last stages (VLM
# 11-12, U-Net 7-8) on format 2.2; this script runs every stage on the current corpus.
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
    --corpus_dir outputs/drr40 --output_dir outputs/tiny_vlm_stage3 --learning_rate 3e-4
# VLM stage 4: the radiograph recipe (more augmentation, bfloat16 autocast).
"$PY" -m train.sft --config train/recipes/tiny_bundled_radiograph.yaml --model_name_or_path outputs/tiny_vlm_stage3 \
    --corpus_dir outputs/drr40 --output_dir outputs/tiny_vlm_stage4
# VLM stage 5: its tower re-trained to see (dense prediction of every structure, the radiograph augmentation), the
# language model kept, the projector re-fitted; stage 6: answering again on the frozen tower (tiny_bundled_seeing.yaml);
# stage 7: the tower trainable again at 0.3 x the lr with its dense loss kept on (tiny_bundled_joint.yaml).
"$PY" -m train.vision_pretrain --init_from outputs/tiny_vlm_stage4 --corpus_dir outputs/drr40 \
    --output_dir outputs/tiny_vlm_seeing_tower --learning_rate 5e-4 --max_steps 1600 --max_minutes 14
"$PY" -m train.sft --config train/recipes/tiny_bundled_seeing.yaml --corpus_dir outputs/drr40
"$PY" -m train.sft --config train/recipes/tiny_bundled_joint.yaml --corpus_dir outputs/drr40
# stage 8: every patch token also taught its own row and column (tiny_bundled_position.yaml); stage 9: the language
# model grown from 4 to 8 layers (tiny_bundled_deeper.yaml); stage 10: more zoomed-out frames and the <seg> shape loss
# (tiny_bundled_framing.yaml; the shipped run read its batches in the main process, as below).
"$PY" -m train.sft --config train/recipes/tiny_bundled_position.yaml --corpus_dir outputs/drr40
"$PY" -m train.sft --config train/recipes/tiny_bundled_deeper.yaml --corpus_dir outputs/drr40
"$PY" -m train.sft --config train/recipes/tiny_bundled_framing.yaml --corpus_dir outputs/drr40 \
    --dataloader_num_workers 0 --dataloader_persistent_workers false
# stage 11: the same recipe on corpus 2.2, whose lung fields end at their costophrenic angles (the shipped stages 1-10
# ran on corpora 1.0-2.1; this script builds the current one for every stage).
"$PY" -m train.sft --config train/recipes/tiny_bundled_costophrenic.yaml --corpus_dir outputs/drr40 \
    --dataloader_num_workers 0 --dataloader_persistent_workers false
# stage 12: 600 steps at lr 1e-4 with a vertical stretch of 0.8-1.2 in the augmentation and the shape loss at 4.0.
"$PY" -m train.sft --config train/recipes/tiny_bundled_aspect_shape.yaml --corpus_dir outputs/drr40 --output_dir outputs/tiny_vlm \
    --dataloader_num_workers 0 --dataloader_persistent_workers false
# U-Net stage 1: from scratch at lr 2e-3; stages 2-5 continue it (--init_from, recorded as initialised_from).
"$PY" -m train.unet --config train/recipes/unet_bundled.yaml --corpus_dir outputs/drr40 --output_dir outputs/unet_stage1
"$PY" -m train.unet --config train/recipes/unet_bundled.yaml --corpus_dir outputs/drr40 --output_dir outputs/unet_stage2 \
    --init_from outputs/unet_stage1 --max_steps 900 --learning_rate 5e-4
"$PY" -m train.unet --config train/recipes/unet_bundled.yaml --corpus_dir outputs/drr40 --output_dir outputs/unet_stage3 \
    --init_from outputs/unet_stage2 --max_steps 1500 --learning_rate 3e-4
"$PY" -m train.unet --config train/recipes/unet_bundled.yaml --corpus_dir outputs/drr40 --output_dir outputs/unet_stage4 \
    --init_from outputs/unet_stage3 --max_steps 1500 --learning_rate 3e-4
"$PY" -m train.unet --config train/recipes/unet_bundled.yaml --corpus_dir outputs/drr40 --output_dir outputs/unet_stage5 \
    --init_from outputs/unet_stage4 --max_steps 1500 --learning_rate 3e-4
# U-Net stage 6: the radiograph recipe (bfloat16 autocast, 3,000 steps at 1e-3).
"$PY" -m train.unet --config train/recipes/unet_bundled_radiograph.yaml --corpus_dir outputs/drr40 \
    --init_from outputs/unet_stage5 --output_dir outputs/unet_stage6
# U-Net stage 7: continued on corpus 2.2 (lung fields end at their costophrenic angles), 1,500 steps at 3e-4.
"$PY" -m train.unet --config train/recipes/unet_bundled_costophrenic.yaml --corpus_dir outputs/drr40 \
    --init_from outputs/unet_stage6 --output_dir outputs/unet_stage7
# U-Net stage 8: a vertical stretch of 0.8-1.25 and a smooth deformation of +-0.05 of the side, 1,500 steps at 2e-4.
"$PY" -m train.unet --config train/recipes/unet_bundled_deform.yaml --corpus_dir outputs/drr40 \
    --init_from outputs/unet_stage7 --output_dir outputs/unet
# The goal figures on the default corpus's test split and on the 40-subject corpus's (four held-out subjects).
"$PY" bench/bench_bundled_models.py --vlm outputs/tiny_vlm --unet outputs/unet --corpus_dir outputs/drr
"$PY" bench/bench_bundled_models.py --vlm outputs/tiny_vlm --unet outputs/unet --corpus_dir outputs/drr40 --tag drr40
