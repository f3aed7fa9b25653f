"""Quality of the demonstration models on a corpus's test split (held-out pseudo-subjects), against their goals.

    python bench/bench_bundled_models.py                                        # bundled VLM + U-Net, outputs/drr
    python bench/bench_bundled_models.py --vlm outputs/tiny_vlm --unet outputs/unet --corpus_dir outputs/drr40
    python bench/bench_bundled_models.py --vlm none --unet outputs/unet           # one model only

The goal's figure is the macro Dice over the structures that cover at least 1 % of the image on average over the
split (U-Net >= 0.90; tiny VLM >= 0.80 with < 2 % invalid answers). Both models go through the same
``chexanatomy.inference`` segmenters and ``eval.corpus_eval.evaluate_on_corpus`` as the evaluation does. The VLM is
asked for single structures only: multipart unions (``ribs_left``, ``ribs_right``, ``costal_cartilages``) have box
targets, no mask tokens, so they count for the U-Net alone. Writes bench/results/bundled_models[_TAG].json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import checkout  # noqa: F401 - this checkout's parts on sys.path (bench/checkout.py)
import datasets
import numpy as np

from chexanatomy.inference import load_segmenter
from chexanatomy.locate import model_source
from eval.corpus_eval import evaluate_on_corpus, large_structures

GOALS = {"unet": {"macro_dice_ge_1pct": 0.90}, "tiny_vlm": {"macro_dice_ge_1pct": 0.80, "invalid_rate": 0.02}}


def large_structure_summary(evaluation: dict, large: set[str]) -> dict:
    """Macro Dice, per-structure Dice and invalid-answer rate over the structures in ``large``."""
    per = {n: s for n, s in evaluation["per_structure"].items() if n in large}
    answers = sum(s["count"] for s in per.values())
    invalid = sum(s["invalid_rate"] * s["count"] for s in per.values())
    return {
        "macro_dice_ge_1pct": round(float(np.mean([s["dice"] for s in per.values()])), 4),
        "structures": len(per),
        "invalid_rate": round(invalid / max(answers, 1), 4),
        "answers": answers,
        "per_structure": {n: round(s["dice"], 4) for n, s in sorted(per.items(), key=lambda kv: kv[1]["dice"])},
    }


def report(label: str, result: dict, goals: dict) -> None:
    lowest = list(result["per_structure"].items())[:5]
    met = ", ".join(f"{k} {result[k]} (goal {'<' if k == 'invalid_rate' else '>='} {g})" for k, g in goals.items())
    print(f"{label} on {result['images']} images, {result['structures']} structures >= 1 % area: {met}")
    print(f"  lowest: {lowest}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vlm", default="bundled-vlm", help="model folder, Hub id, 'bundled-vlm' or 'none'")
    ap.add_argument("--unet", default="bundled-unet", help="model folder, Hub id, 'bundled-unet' or 'none'")
    ap.add_argument("--corpus_dir", default="outputs/drr")
    ap.add_argument("--split", default="test")
    ap.add_argument("--tag", default="", help="suffix of the results file (bundled_models_TAG.json)")
    args = ap.parse_args()
    rows = datasets.load_dataset(args.corpus_dir)[args.split]
    large = large_structures(rows)
    results = {"corpus_dir": args.corpus_dir, "split": args.split, "images": len(rows)}
    for key, kind, spec in (("unet", "unet", args.unet), ("tiny_vlm", "vlm", args.vlm)):
        source = model_source(spec, kind)
        if source is None:
            continue
        evaluation, _ = evaluate_on_corpus(load_segmenter(source), rows, model_id=key, gallery_size=0)
        results[key] = {"model": spec, "images": len(rows), **large_structure_summary(evaluation, large)}
        report(key, results[key], GOALS[key])
    name = f"bundled_models_{args.tag}.json" if args.tag else "bundled_models.json"
    out = Path(__file__).parent / "results" / name
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
