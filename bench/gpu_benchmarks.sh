#!/usr/bin/env bash
# The H200 figures of the training and inference goals, in one short run on a borrowed GPU (the library's `device`
# tool). Needs only torch, transformers, peft and tokenizers (the GPU image has them): no TRL, datasets or smp.
#   run(command="bash bench/gpu_benchmarks.sh", timeout_s=540)
# Results land in bench/results/ and, when $OUT is set (the device tool), are copied there to come back.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
# Training step, PaliGemma 2 3B/448-shaped (random bf16 weights): >= 300 structures/s at <= 80 GB; anchor 192/s, 123 GB.
timeout 300 "$PY" bench/bench_sft.py --shape 3b-448 --device cuda --batch 8 --steps 3 || echo "bench_sft failed: $?"
# Inference: 80 structures of one image in one batched generate: <= 1 s; anchor 3.4 s one generate per structure.
timeout 200 "$PY" bench/bench_inference.py --shape 3b-448 --device cuda --structures 80 --repeats 2 || echo "bench_inference failed: $?"
# Render: ours (a CT's poses batched; CTs/hour per GPU) beside diffdrr's Siddon and nanodrr's fused Triton kernel, same CT,
# view and size. The GPU image lacks diffdrr and nanodrr: carry their wheels (and jaxtyping, roma, torchio's) in wheels/
# (`pip download --no-deps diffdrr==0.6.1 nanodrr==0.1.7 jaxtyping roma torchio -d wheels`, 64 MiB in all).
if [ -d wheels ]; then "$PY" -m pip install -q --no-deps wheels/*.whl || echo "wheels failed: $?"; fi
timeout 240 "$PY" bench/bench_render.py --device cuda || echo "bench_render failed: $?"
if [ -n "${OUT:-}" ]; then cp bench/results/*cuda*.json "$OUT"/ 2>/dev/null || true; fi
