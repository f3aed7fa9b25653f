"""Size and resolution of the VLM's vision tower, chosen by measurement (issue 21, item 4).

For each tower input side (default 128 and 192 px, 16 px patches: 64 and 144 image tokens) this script reports
* the training cost per step of both stages on this machine: tower pre-training (``train.vision_pretrain``, batch 16,
  every structure) and the VLM's answer training (``train.sft``'s answer-only loss, tower frozen, batch 16,
  6 structures per answer), median seconds over a few timed steps after a warm-up;
* the real-radiograph lung-field Dice of pre-trained towers (``TowerSegmenter``: tower + its pixel head, scored by
  ``eval.real_eval`` like any model) given as folders, e.g. two towers trained for the same wall time.

    python bench/bench_vlm_size.py --corpus_dir outputs/drr40 --towers outputs/tower128 outputs/tower192 \
        --montgomery ../shared/real_cxr_val/montgomery --shenzhen ../shared/real_cxr_val/shenzhen

Writes ``bench/results/vlm_size.json`` and prints one table. The real sets are for choosing between recipes only.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

import checkout  # noqa: F401  (puts the checkout on sys.path)
import datasets
import torch
import torch.nn.functional as F

from chexanatomy.codec import default_tokenizer, load_codec
from chexanatomy.finetune import answer_only_loss
from eval import real_cxr
from eval.real_eval import evaluate_on_real
from train.augment import augment_radiograph
from train.collator import AnatomyCollator, lazy_masks
from train.loc_prior import loc_smoothing
from train.tiny_paligemma import TinySpec, build_model, build_processor
from train.unet import default_structures, loss_fn, row_tensors
from train.vision_pretrain import PixelHead, TowerSegmenter, to_pixels, tower_logits, tower_of


def _median_seconds(step, warmup: int = 2, timed: int = 5) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(timed):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def tower_step_seconds(rows, size: int) -> float:
    """One tower pre-training step (augmentation included), batch 16, every structure."""
    structures = default_structures(rows["structures"])
    spec = TinySpec(image_size=size)
    tower = tower_of(build_model(build_processor(spec), spec)).train()
    head = PixelHead(spec.hidden, 4, structures)
    optimiser = torch.optim.AdamW([*tower.parameters(), *head.parameters()], lr=1e-4)
    cached = [row_tensors(rows[i], structures, size) for i in range(4)]
    rng = random.Random(0)

    def step():
        batch = [augment_radiograph(*cached[rng.randrange(4)], rng) for _ in range(16)]
        images, targets = (torch.stack(t) for t in zip(*batch, strict=True))
        loss = loss_fn(tower_logits(tower, head, to_pixels(images)), F.adaptive_avg_pool2d(targets, size // 4))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()

    return _median_seconds(step)


def answer_step_seconds(rows, size: int) -> tuple[float, float]:
    """(collate seconds, train-step seconds) of the VLM's answer training, tower frozen, batch 16."""
    spec = TinySpec(image_size=size)
    processor = build_processor(spec)
    model = build_model(processor, spec).train()
    for name, p in model.named_parameters():
        p.requires_grad = "vision_tower" not in name
    collator = AnatomyCollator(processor, default_tokenizer(load_codec("default")), 6, 0.1, 0.2, 0.6, seed=0)
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    smoothing = loc_smoothing(processor.tokenizer, 6.0)
    lazy = lazy_masks(rows)
    batches = []

    def collate():
        batches.append(collator([lazy[random.randrange(len(lazy))] for _ in range(16)]))

    def step():
        loss = answer_only_loss(model, dict(batches.pop()), smoothing)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()

    collate_s = _median_seconds(collate, warmup=1, timed=8)
    return collate_s, _median_seconds(step, warmup=1, timed=5)


def real_dice(tower_dir: str, args) -> dict:
    """Lung-field Dice (scr) of a pre-trained tower with its pixel head on the real sets given."""
    segmenter = TowerSegmenter(tower_dir)
    out = {}
    sets = {"montgomery": (args.montgomery, real_cxr.load_montgomery),
            "shenzhen": (args.shenzhen, real_cxr.load_shenzhen)}  # fmt: skip
    for name, (root, loader) in sets.items():
        if root:
            entry = evaluate_on_real(segmenter, list(loader(root)), tower_dir, {"id": name, "name": name})
            out[name] = entry["summary"]["macro"]["dice"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus_dir", default="outputs/drr40")
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 192])
    parser.add_argument("--towers", nargs="*", default=[], help="Pre-trained tower folders to score on real sets.")
    parser.add_argument("--montgomery")
    parser.add_argument("--shenzhen")
    parser.add_argument("--skip_timing", action="store_true")
    parser.add_argument("--output", default="bench/results/vlm_size.json")
    args = parser.parse_args()
    rows = datasets.load_dataset(args.corpus_dir)["train"].select(range(16))
    result = {"threads": torch.get_num_threads(), "sizes": {}, "towers": {}}
    if not args.skip_timing:
        for size in args.sizes:
            collate_s, answer_s = answer_step_seconds(rows, size)
            result["sizes"][size] = {"image_tokens": (size // 16) ** 2, "tower_step_s": tower_step_seconds(rows, size),
                                     "answer_collate_s": collate_s, "answer_step_s": answer_s}  # fmt: skip
    for folder in args.towers:
        record = json.loads((Path(folder) / "training_config.json").read_text())
        result["towers"][folder] = {"image_size": record["image_size"], "steps": record["outcome"].get("steps_done"),
                                    **real_dice(folder, args)}  # fmt: skip
    print(f"| side | image tokens | tower step s | answer step s (+ collate s) |  ({result['threads']} threads)")
    for size, r in result["sizes"].items():
        print(f"| {size} | {r['image_tokens']} | {r['tower_step_s']:.2f} | {r['answer_step_s']:.2f} "
              f"(+ {r['answer_collate_s']:.2f}) |")  # fmt: skip
    for folder, r in result["towers"].items():
        print(f"tower {folder}: {r['image_size']} px, {r['steps']} steps, real lung-field Dice "
              + ", ".join(f"{k} {v:.3f}" for k, v in r.items() if k in ("montgomery", "shenzhen")))
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
