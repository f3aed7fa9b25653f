"""Training-step efficiency: structures/s and peak memory, one structure per sequence vs 20 packed, answer-only.

    python bench/bench_sft.py                                   # tiny model on CPU: tokens/s and structures/s
    python bench/bench_sft.py --shape 3b-448 --device cuda      # PaliGemma 2 3B/448-shaped, random bf16 weights, H200

The set-up of docs/anchors.md: LoRA r=16 on q/k/v/o/gate/up/down of the language model, vision tower frozen, AdamW, a
plain loop, no gradient checkpointing; a sequence = image tokens + 8 prompt tokens + the answer (one structure = 21
answer tokens, 20 structures = 20 x 22). Rows:

* ``1 structure, full logits``: the anchor's configuration (the model's own loss over every position);
* ``20 packed, full logits``: packing alone;
* ``20 packed, answer-only logits``: ours (``chexanatomy.finetune.answer_only_loss``: the LM head runs on answer
  positions only).

Goal on an H200 for 3B/448: >= 300 structures/s at <= 80 GB (anchor: 192/s at 123 GB for 20 packed, batch 8).
Results: bench/results/sft_<shape>_<device>.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import checkout  # noqa: F401 - this checkout's parts on sys.path (bench/checkout.py)
import torch
from bench_inference import paligemma2_3b_shaped
from peft import LoraConfig, get_peft_model

from chexanatomy.finetune import answer_only_loss
from train.lm_loss import LORA_TARGETS
from train.tiny_paligemma import build_model, build_processor

ANCHOR = {  # docs/anchors.md, H200, 3B/448, eager, batch 8
    "1 structure, full logits": {"structures_per_s": 12.4, "peak_gb": 84},
    "20 packed, full logits": {"structures_per_s": 192, "peak_gb": 123},
}


def build(shape: str, device: str):
    """(LoRA-wrapped model, image side, image tokens) for the shape."""
    if shape == "tiny":
        model, side = build_model(build_processor()), 128
        tokens = (side // 16) ** 2
    else:
        side = int(shape.split("-")[1])
        model, tokens = paligemma2_3b_shaped(side), (side // 14) ** 2
        model = model.to(torch.bfloat16)
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=LORA_TARGETS, task_type="CAUSAL_LM")
    return get_peft_model(model, lora).to(device), side, tokens


def batch_of(model, batch: int, side: int, image_tokens: int, structures: int, device: str) -> dict:
    """Synthetic inputs: random pixels, image tokens + 8 prompt tokens, answer of ``structures`` objects."""
    config = model.get_base_model().config
    answer = 21 if structures == 1 else 22 * structures
    length = image_tokens + 8 + answer
    ids = torch.randint(10, 200, (batch, length))
    ids[:, :image_tokens] = config.image_token_id
    types = torch.zeros(batch, length, dtype=torch.long)
    types[:, image_tokens + 8 :] = 1
    labels = torch.where(types == 1, ids, torch.full_like(ids, -100))
    dtype = next(p for p in model.parameters()).dtype
    inputs = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "token_type_ids": types,
        "labels": labels,
        "pixel_values": torch.randn(batch, 3, side, side, dtype=dtype),
    }
    return {k: v.to(device) for k, v in inputs.items()}


def measure(model, inputs: dict, answer_only: bool, steps: int, device: str) -> tuple[float, float]:
    """(seconds per optimiser step, peak GB on CUDA else None) after one warm-up step."""
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-5)

    def step():
        loss = answer_only_loss(model, inputs) if answer_only else model(**inputs).loss
        loss.backward()
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)

    step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() / 1e9 if device.startswith("cuda") else None
    return (time.perf_counter() - start) / steps, peak


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="tiny", choices=["tiny", "3b-224", "3b-448"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)
    model, side, image_tokens = build(args.shape, args.device)
    model.train()
    rows = []
    for label, structures, answer_only in [
        ("1 structure, full logits", 1, False),
        ("20 packed, full logits", 20, False),
        ("20 packed, answer-only logits", 20, True),
    ]:
        inputs = batch_of(model, args.batch, side, image_tokens, structures, args.device)
        seconds, peak = measure(model, inputs, answer_only, args.steps, args.device)
        tokens = inputs["input_ids"].numel()
        rows.append(
            {
                "run": label,
                "batch": args.batch,
                "step_s": round(seconds, 4),
                "peak_gb": None if peak is None else round(peak, 1),
                "structures_per_s": round(args.batch * structures / seconds, 1),
                "tokens_per_s": round(tokens / seconds),
                "anchor": ANCHOR.get(label) if args.shape == "3b-448" else None,
            }
        )
        anchor = rows[-1]["anchor"]
        versus = f" | anchor {anchor['structures_per_s']}/s at {anchor['peak_gb']} GB" if anchor else ""
        print(
            f"{label:32s} step {seconds:.3f} s, {rows[-1]['structures_per_s']:8.1f} structures/s, "
            f"{rows[-1]['tokens_per_s']:8d} tokens/s, peak {'n/a (CPU)' if peak is None else f'{peak:.1f} GB'}{versus}"
        )
    if args.shape == "3b-448":
        ours = rows[-1]
        print(
            f"ours/anchor structures/s: {ours['structures_per_s'] / 192:.2f} (goal >= 300/s, i.e. 1.56x); "
            f"peak {ours['peak_gb']} GB (goal <= 80; anchor 123)"
        )
    out = Path(__file__).parent / "results" / f"sft_{args.shape}_{args.device.split(':')[0]}.json"
    record = {"shape": args.shape, "device": args.device, "rows": rows}
    out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
