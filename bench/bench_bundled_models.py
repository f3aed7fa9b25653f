"""Quality of the demonstration models on the embedded corpus's test split (held-out pseudo-subjects).

    python bench/bench_bundled_models.py --unet outputs/unet_bundled --corpus_dir outputs/drr

Macro Dice over the structures that cover at least 1 % of the image on average (the goal's definition:
U-Net >= 0.90), per structure in bench/results/bundled_models.json. The tiny VLM's figures join once it is
trained (issue: bundled reference models).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import datasets
import numpy as np

from chexanatomy.unet import AnatomyUNet


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two bool masks; both empty counts as 1."""
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * (a & b).sum() / total)


def evaluate_unet(model: AnatomyUNet, rows) -> tuple[dict, dict]:
    """Per-structure Dice lists and mean area fractions over the rows (ground-truth structures only)."""
    scores, areas = defaultdict(list), defaultdict(list)
    for row in rows:
        truth = {s["name"]: np.asarray(s["mask"], dtype=bool) for s in row["structures"] if s["name"] in model.structures}
        predicted = model.segment_masks(row["image"], list(truth))
        for name, mask in truth.items():
            scores[name].append(dice(mask, predicted[name]))
            areas[name].append(mask.mean())
    return scores, {n: float(np.mean(v)) for n, v in areas.items()}


def evaluate_vlm(model, processor, tokenizer, rows, names_of_interest: set[str], batch: int = 32) -> tuple[dict, int, int]:
    """Per-structure Dice lists of greedy ``segment <name>`` answers, and (invalid answers, answers)."""
    import torch

    from chexanatomy.anatomy import STRUCTURES

    scores, invalid, total = defaultdict(list), 0, 0
    for row in rows:
        image = row["image"].convert("RGB")
        truth = {s["name"]: np.asarray(s["mask"], dtype=bool) for s in row["structures"] if s["name"] in names_of_interest}
        names = list(truth)
        for start in range(0, len(names), batch):
            chunk = names[start : start + batch]
            inputs = processor(text=[f"<image>segment {STRUCTURES[n].display}" for n in chunk], images=[image] * len(chunk),
                               return_tensors="pt", padding="longest")  # fmt: skip
            with torch.no_grad():
                out = model.generate(**inputs, max_new_tokens=24, do_sample=False)
            answers = processor.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
            for name, answer in zip(chunk, answers):
                objects = tokenizer.decode(answer, truth[name].shape)
                ok = bool(objects) and objects[0].valid
                invalid, total = invalid + (not ok), total + 1
                scores[name].append(dice(truth[name], objects[0].mask) if ok else 0.0)
    return scores, invalid, total


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--unet", default=None)
    ap.add_argument("--vlm", default=None, help="folder of a full (tiny) model with its processor and mask_codec/")
    ap.add_argument("--corpus_dir", default="outputs/drr")
    ap.add_argument("--split", default="test")
    args = ap.parse_args()
    rows = datasets.load_dataset(args.corpus_dir)[args.split]
    areas = defaultdict(list)
    for row in rows:
        for s in row["structures"]:
            areas[s["name"]].append(s["area_px"] / (row["image"].size[0] * row["image"].size[1]))
    large = {n for n, v in areas.items() if np.mean(v) >= 0.01}
    results = {}
    if args.unet:
        model = AnatomyUNet.from_pretrained(args.unet).eval()
        scores, _ = evaluate_unet(model, rows)
        results["unet"] = summarise("U-Net", {n: v for n, v in scores.items() if n in large}, len(rows), 0.90)
    if args.vlm:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        from chexanatomy.codec import default_tokenizer, load_codec

        model = AutoModelForImageTextToText.from_pretrained(args.vlm).eval()
        processor = AutoProcessor.from_pretrained(args.vlm)
        scores, invalid, total = evaluate_vlm(model, processor, default_tokenizer(load_codec(f"{args.vlm}/mask_codec")), rows, large)
        results["tiny_vlm"] = {**summarise("tiny VLM", scores, len(rows), 0.80), "invalid_rate": round(invalid / max(total, 1), 4)}
        print(f"tiny VLM invalid answers: {invalid}/{total} (goal < 2 %)")
    out = Path(__file__).parent / "results" / "bundled_models.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


def summarise(label: str, scores: dict, images: int, goal: float) -> dict:
    per = {n: round(float(np.mean(v)), 4) for n, v in scores.items()}
    macro = float(np.mean(list(per.values())))
    worst = sorted(per.items(), key=lambda kv: kv[1])[:5]
    print(f"{label} on {images} images: macro Dice {macro:.4f} over {len(per)} structures >= 1 % area (goal {goal}); lowest {worst}")
    return {"macro_dice_ge_1pct": round(macro, 4), "per_structure": per, "images": images}


if __name__ == "__main__":
    main()
