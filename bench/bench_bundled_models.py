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

from train.unet import AnatomyUNet


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two bool masks; both empty counts as 1."""
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * (a & b).sum() / total)


def evaluate_unet(model: AnatomyUNet, rows) -> tuple[dict, dict]:
    """Per-structure Dice lists and mean area fractions over the rows (ground-truth structures only)."""
    scores, areas = defaultdict(list), defaultdict(list)
    for row in rows:
        truth = {s["name"]: np.asarray(s["mask"], dtype=bool) for s in row["structures"] if s["name"] in model.structures}
        predicted = model.segment(row["image"], list(truth))
        for name, mask in truth.items():
            scores[name].append(dice(mask, predicted[name]))
            areas[name].append(mask.mean())
    return scores, {n: float(np.mean(v)) for n, v in areas.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--unet", required=True)
    ap.add_argument("--corpus_dir", default="outputs/drr")
    ap.add_argument("--split", default="test")
    args = ap.parse_args()
    rows = datasets.load_dataset(args.corpus_dir)[args.split]
    model = AnatomyUNet.from_pretrained(args.unet).eval()
    scores, areas = evaluate_unet(model, rows)
    big = {n: float(np.mean(v)) for n, v in scores.items() if areas[n] >= 0.01}
    macro = float(np.mean(list(big.values())))
    worst = sorted(big.items(), key=lambda kv: kv[1])[:5]
    print(f"U-Net on {len(rows)} {args.split} images: macro Dice {macro:.4f} over {len(big)} structures >= 1 % area "
          f"(goal 0.90); lowest {[(n, round(d, 3)) for n, d in worst]}")  # fmt: skip
    out = Path(__file__).parent / "results" / "bundled_models.json"
    out.write_text(json.dumps({"unet": {"macro_dice_ge_1pct": round(macro, 4), "per_structure": big, "images": len(rows)}}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
