"""Training steps in float32 against bfloat16 autocast on this CPU (AVX-512 BF16): both trainers, one run.

    python bench/bench_train_precision.py --corpus_dir outputs/drr40   # -> bench/results/train_precision_cpu.json

For each trainer the two precisions start from the same weights and see the same batches (real corpus rows, the
trainers' own augmentation, seeded), so the comparison is speed *and* quality:

* U-Net (the bundled recipe's shape: mobilenet_v2, 128 px, batch 8, every corpus structure): seconds per optimiser
  step, and the mean loss of the last steps;
* tiny VLM (the bundled model, full fine-tuning, batch 8, 4 structures per answer, ``answer_only_loss``): the same.

The anchor is float32 (ratio = float32 seconds / bfloat16 seconds; > 1 means bfloat16 is faster). Quality holds when
the bfloat16 run's final loss is within 5 % of the float32 run's.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import statistics
import time
from pathlib import Path

import checkout  # noqa: F401 - this checkout's parts on sys.path (bench/checkout.py)
import datasets
import torch

from chexanatomy.codec import default_tokenizer
from chexanatomy.finetune import answer_only_loss
from chexanatomy.inference import bundled_model_path
from chexanatomy.unet import AnatomyUNet
from train.augment import augment_radiograph
from train.collator import AnatomyCollator, lazy_masks
from train.unet import default_structures, loss_fn, row_tensors


def _timed_steps(step, steps: int) -> tuple[list[float], list[float]]:
    """(seconds, losses) of ``steps`` calls of ``step(i) -> loss`` after one warm-up call."""
    step(-1)
    seconds, losses = [], []
    for i in range(steps):
        start = time.perf_counter()
        losses.append(step(i))
        seconds.append(time.perf_counter() - start)
    return seconds, losses


def unet_run(rows, bf16: bool, steps: int, init: AnatomyUNet, structures: list[str]) -> dict:
    model = copy.deepcopy(init).train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
    cached = [row_tensors(r, structures, 128) for r in rows]
    rng = random.Random(0)
    batches = [
        [augment_radiograph(*cached[(8 * i + j) % len(cached)], rng) for j in range(8)] for i in range(steps + 1)
    ]

    def step(i):
        images, targets = (torch.stack(t) for t in zip(*batches[i + 1], strict=True))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(model(images).float(), targets)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        return float(loss.detach())

    return _summary(*_timed_steps(step, steps))


def vlm_run(rows, bf16: bool, steps: int) -> dict:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    path = bundled_model_path("vlm")
    model = AutoModelForImageTextToText.from_pretrained(path).train()
    processor = AutoProcessor.from_pretrained(path)
    collator = AnatomyCollator(processor, default_tokenizer(), structures_per_sample=4, augment_fraction=0.3, seed=0)
    batches = [collator([rows[(8 * i + j) % len(rows)] for j in range(8)]) for i in range(steps + 1)]
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-4)

    def step(i):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = answer_only_loss(model, dict(batches[i + 1]))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        return float(loss.detach())

    return _summary(*_timed_steps(step, steps))


def _summary(seconds: list[float], losses: list[float]) -> dict:
    return {
        "step_s_median": round(statistics.median(seconds), 4),
        "first_loss": round(losses[0], 4),
        "final_loss": round(statistics.mean(losses[-5:]), 4),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus_dir", default="outputs/drr40")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    train = datasets.load_dataset(args.corpus_dir)["train"]
    rows = [train[i] for i in range(64)]
    structures = default_structures([r["structures"] for r in rows])
    torch.manual_seed(0)
    init = AnatomyUNet(structures, 128, "mobilenet_v2")
    report = {"threads": torch.get_num_threads(), "steps": args.steps}
    report["unet"] = {p: unet_run(rows, p == "bfloat16", args.steps, init, structures) for p in ("float32", "bfloat16")}
    lazy = lazy_masks(train.select(range(64)))
    report["vlm"] = {p: vlm_run(lazy, p == "bfloat16", args.steps) for p in ("float32", "bfloat16")}
    for trainer in ("unet", "vlm"):
        f32, b16 = report[trainer]["float32"], report[trainer]["bfloat16"]
        speed = f32["step_s_median"] / b16["step_s_median"]
        holds = b16["final_loss"] <= 1.05 * f32["final_loss"]
        report[trainer]["bf16_speedup"] = round(speed, 2)
        report[trainer]["quality_holds"] = holds
        verdict = "quality holds" if holds else "quality drops"
        print(
            f"{trainer:5s} step float32 {f32['step_s_median']:.3f} s (anchor) | bfloat16 {b16['step_s_median']:.3f} s"
            f" | ratio {speed:.2f}x | final loss {f32['final_loss']:.4f} vs {b16['final_loss']:.4f} ({verdict})"
        )
    out = Path(__file__).parent / "results" / "train_precision_cpu.json"
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
