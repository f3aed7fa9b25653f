"""Choose between a VLM run's checkpoints on real radiographs (issue 21: the validation set picks, never the test).

Every folder given is scored, and every ``checkpoint-N`` folder inside a run folder (``train.sft --save_steps``), on
the real sets given: lung-field Dice and box IoU (macro over the sets' structures, ``scr`` definition, as ``python -m
eval --montgomery/--shenzhen``), the x0 == y0 rate of the answers (copied boxes) and the invalid rate; and how well
the tower's tokens still say where they are on those images (``train.vision_pretrain.position_readability``: held-out
R^2 of a linear probe for each token's row and column). A checkpoint carries no mask codec of its own: the run
folder's, else the bundled one, is used.

    python bench/score_checkpoints.py outputs/tiny_vlm_seeing chexanatomy/assets/models/tiny_vlm \
        --montgomery ../shared/real_cxr_val/montgomery --shenzhen ../shared/real_cxr_val/shenzhen

``--seg_decoding expected`` scores the masks of the expected code vectors (``VLMSegmenter``); ``--zooms 1 0.9 0.8``
votes the masks of zoomed-out copies (``ZoomEnsemble``).

Prints one row per model folder and writes them to ``--output`` (JSON, default ``bench/results/checkpoints.json``).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import checkout  # noqa: F401  (puts the checkout on sys.path)
import torch

from chexanatomy.inference import SEG_DECODINGS, ZoomEnsemble, load_segmenter
from eval import real_cxr
from eval.real_eval import evaluate_on_real
from train.vision_pretrain import position_readability, tower_input, tower_of


def model_folders(paths: list[str]) -> list[Path]:
    """The folders to score: each path's ``checkpoint-N`` folders by step, then the path itself if it holds a model."""
    folders = []
    for path in map(Path, paths):
        steps = sorted(path.glob("checkpoint-*"), key=lambda p: int(re.sub(r"\D", "", p.name) or 0))
        folders += [p for p in steps if (p / "config.json").is_file()]
        if (path / "config.json").is_file():
            folders.append(path)
    return folders


def codec_of(folder: Path) -> str | Path:
    """The folder's mask codec, its run folder's (for a checkpoint), else the bundled one."""
    for candidate in (folder / "mask_codec", folder.parent / "mask_codec"):
        if candidate.is_dir():
            return candidate
    return "default"


def score(folder: Path, sets: dict, seg_decoding: str = "argmax", zooms: tuple[float, ...] = (1.0,)) -> dict:
    """``{set: {"dice", "box_iou", "x0_eq_y0", "invalid"}, "positions": {"row", "column"}}`` of one model folder.

    A U-Net folder is scored too (its boxes are its masks' tight boxes), without ``positions``.
    """
    segmenter = load_segmenter(folder, codec=codec_of(folder), local_only=True, seg_decoding=seg_decoding)
    scored = segmenter if tuple(zooms) == (1.0,) else ZoomEnsemble(segmenter, zooms)
    out = {}
    for name, records in sets.items():
        summary = evaluate_on_real(scored, records, str(folder), {"id": name, "name": name})["summary"]
        out[name] = {"dice": summary["macro"]["dice"], "box_iou": summary["macro"].get("box_iou"),
                     "x0_eq_y0": summary["x0_eq_y0_rate"], "invalid": summary["invalid_rate"]}  # fmt: skip
    if segmenter.kind != "vlm":
        return out  # a U-Net has no tokens to read positions from
    model = segmenter.model
    size = model.config.vision_config.image_size
    pixels = torch.cat([tower_input(r["image"], size) for records in sets.values() for r in records])
    out["positions"] = position_readability(tower_of(model), pixels.to(model.dtype))
    return out


def add_real_set_options(parser: argparse.ArgumentParser) -> None:
    """``--montgomery`` and ``--shenzhen``: the real sets a bench script scores on."""
    parser.add_argument("--montgomery", help="A Montgomery-layout folder (python -m eval --montgomery).")
    parser.add_argument("--shenzhen", help="A Shenzhen-layout folder (python -m eval --shenzhen).")


def real_sets(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, list]:
    """``{"montgomery": records, "shenzhen": records}`` of the folders given; a usage error when none is."""
    sets = {name: list(loader(root)) for name, root, loader in
            (("montgomery", args.montgomery, real_cxr.load_montgomery),
             ("shenzhen", args.shenzhen, real_cxr.load_shenzhen)) if root}  # fmt: skip
    if not sets:
        parser.error("give --montgomery and/or --shenzhen")
    return sets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="Model folders or run folders holding checkpoint-N folders.")
    add_real_set_options(parser)
    parser.add_argument("--seg_decoding", default="argmax", choices=SEG_DECODINGS,
                        help="How the 16 <seg> slots become a mask (chexanatomy.inference.VLMSegmenter).")
    parser.add_argument("--zooms", type=float, nargs="+", default=[1.0],
                        help="Test-time zooms (chexanatomy.inference.ZoomEnsemble); 1 alone: off.")
    parser.add_argument("--output", default="bench/results/checkpoints.json")
    args = parser.parse_args()
    sets = real_sets(parser, args)
    folders = model_folders(args.runs)
    if not folders:
        parser.error(f"no model folder in {args.runs}")
    results = {}
    print("| model | " + " | ".join(f"{s} Dice | box IoU | x0 == y0 | invalid" for s in sets)
          + " | token position R^2 row / column |")
    for folder in folders:
        results[str(folder)] = r = score(folder, sets, args.seg_decoding, tuple(args.zooms))
        cells = [f"{r[s]['dice']:.3f} | {r[s]['box_iou'] or 0:.3f} | {r[s]['x0_eq_y0'] or 0:.0%} | "
                 f"{r[s]['invalid']:.0%}" for s in sets]  # fmt: skip
        positions = f"{r['positions']['row']:.3f} / {r['positions']['column']:.3f}" if "positions" in r else "-"
        print(f"| {folder} | " + " | ".join(cells) + f" | {positions} |", flush=True)
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
