"""Benchmark: mask -> tokens -> mask fidelity of the anatomy codec on held-out subjects, and its speed.

    python bench/bench_codec.py --corpus_dir outputs/drr                      # the bundled default codec
    python bench/bench_codec.py --corpus_dir outputs/drr --codec outputs/mask_codec

For every structure mask of the corpus's validation and test subjects (never seen by the codec): encode to
`<loc>`/`<seg>` tokens and decode back at the original resolution (Dice), next to the ceiling of the
representation without quantisation (crop -> 64x64 -> back). Compares box conventions (tight vs widened by
10 px) and crop resizing (bilinear soft vs nearest). Speed: encode + decode of all masks of an image,
batched, masks per second. Writes bench/results/codec.json and docs/codec.md (the per-structure table).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import checkout  # noqa: F401 - this checkout's parts on sys.path (bench/checkout.py)
import numpy as np
import torch

from chexanatomy.anatomy import tokenisable
from chexanatomy.codec import load_codec
from chexanatomy.mask_tokens import MaskTokenizer, codec_precision, crop_masks, paste_mask, pixel_boxes, tight_boxes
from chexanatomy.masks import dice
from chexanatomy.vqvae import INFERENCE_CHUNK, MaskVQVAE, run_inference
from train.codec_data import full_masks

VARIANTS = {
    "tight, bilinear": (0, "bilinear", "float32"),
    "tight, nearest": (0, "nearest", "float32"),
    "widened 10 px, nearest": (10, "nearest", "float32"),
    "widened 10 px, bilinear": (10, "bilinear", "float32"),
    "tight, bilinear, bfloat16 codec": (0, "bilinear", "bfloat16"),
}
GOALS = {"macro": 0.95, "every_structure": 0.85, "codec_over_ceiling": 0.97}



def ceiling_masks(masks: np.ndarray, widen: int, resize: str) -> list[np.ndarray]:
    """Masks after crop -> 64x64 -> back, without the codec (the representation's own limit)."""
    hw = masks.shape[1:]
    boxes = pixel_boxes(tight_boxes(masks), hw, widen)
    crops = crop_masks(masks, boxes, resize)
    return [paste_mask(2 * c - 1, b.astype(float), hw) for c, b in zip(crops, boxes, strict=True)]


def evaluate(tokenizer: MaskTokenizer, images) -> tuple[dict, dict]:
    """Per-structure lists of codec Dice and ceiling Dice (mask -> tokens -> mask at the original resolution)."""
    codec_d, ceil_d = defaultdict(list), defaultdict(list)
    for _, _, hw, names, masks in images:
        decoded = tokenizer.decode_batch([" ; ".join(tokenizer.encode(masks, names))], [hw])[0]
        ceiling = ceiling_masks(masks, tokenizer.widen_px, tokenizer.resize)
        for name, mask, obj, ceil in zip(names, masks, decoded, ceiling, strict=True):
            codec_d[name].append(dice(mask, obj.mask) if obj.valid else 0.0)
            ceil_d[name].append(dice(mask, ceil))
    return codec_d, ceil_d


def end_to_end_speed(tokenizer: MaskTokenizer, images, batched: bool, repeats: int = 3) -> float:
    """Masks/s of encode + decode over all images, best of ``repeats`` passes after a warm-up pass.

    Every image's masks are encoded in one call (``tokenizer.encode`` takes one image); the answers are decoded
    image by image (``batched=False``) or all in one ``decode_batch`` call (``batched=True``).
    """
    n_masks = sum(len(names) for *_, names, _ in images)
    best = float("inf")
    for attempt in range(repeats + 1):  # pass 0 is the warm-up: oneDNN builds its kernels per shape
        t0 = time.perf_counter()
        answers = [(" ; ".join(tokenizer.encode(masks, names)), hw) for _, _, hw, names, masks in images]
        if batched:
            tokenizer.decode_batch([text for text, _ in answers], [hw for _, hw in answers])
        else:
            for text, hw in answers:
                tokenizer.decode_batch([text], [hw])
        best = min(best, time.perf_counter() - t0) if attempt else best
    return n_masks / best


def summarise(codec_d, ceil_d) -> dict:
    """Goal figures over single structures; multipart unions (rib cages), which get no mask tokens, apart."""
    every = {n: (float(np.mean(codec_d[n])), float(np.mean(ceil_d[n])), len(codec_d[n])) for n in sorted(codec_d)}
    per = {n: v for n, v in every.items() if tokenisable(n)}
    multipart = {n: round(v[0], 4) for n, v in every.items() if not tokenisable(n)}
    macro = float(np.mean([v[0] for v in per.values()]))
    ceiling = float(np.mean([v[1] for v in per.values()]))
    ratio = float(np.mean([v[0] / max(v[1], 1e-6) for v in per.values()]))
    worst = min(per.items(), key=lambda kv: kv[1][0])
    return {"macro_dice": round(macro, 4), "ceiling_macro": round(ceiling, 4), "codec_over_ceiling": round(ratio, 4),
            "min_structure": [worst[0], round(worst[1][0], 4)], "per_structure": per,
            "multipart_not_tokenised": multipart}  # fmt: skip


def markdown_table(per: dict) -> str:
    lines = ["| structure | codec Dice | ceiling Dice | codec / ceiling | masks |", "| --- | --- | --- | --- | --- |"]
    for name, (d, c, n) in sorted(per.items(), key=lambda kv: kv[1][0]):
        lines.append(f"| {name} | {d:.3f} | {c:.3f} | {d / max(c, 1e-6):.3f} | {n} |")
    return "\n".join(lines)


def network_speeds(codec: MaskVQVAE, chunk_sizes: tuple[int, ...], repeats: int = 8, batch: int = 512) -> list[dict]:
    """Masks/s of the VQ-VAE's encoder then decoder alone (no crop, paste or text): the floor under encode + decode.

    Per arithmetic (float32, bfloat16), ``batch`` masks run through both networks (``run_inference``) in passes of
    each of ``chunk_sizes``; the settings alternate ``repeats`` times and each reports its median, so a slow spell
    of a shared machine does not favour one of them.
    """
    x = 2 * (torch.rand(batch, 1, 64, 64) > 0.5).float() - 1
    grid = codec.quantizer.codebook[codec.encode_indices((x[:, 0] + 1) / 2)]
    grid = grid.reshape(batch, 4, 4, -1).permute(0, 3, 1, 2)
    rows = []
    for precision in ("float32", "bfloat16"):
        times = defaultdict(list)
        with codec_precision(codec, precision):
            for attempt in range(repeats + 1):  # pass 0 is the warm-up
                for chunk in chunk_sizes:
                    t0 = time.perf_counter()
                    run_inference(codec.encoder, x, chunk)
                    run_inference(codec.decoder, grid, chunk)
                    if attempt:
                        times[chunk].append(time.perf_counter() - t0)
        for chunk in chunk_sizes:
            speeds = [batch / t for t in times[chunk]]
            rows.append({"precision": precision, "chunk_size": chunk, "median": round(float(np.median(speeds)), 1),
                         "min": round(min(speeds), 1), "max": round(max(speeds), 1)})  # fmt: skip
    return rows


_MEMORY_PROBE = """
import resource, sys, torch
from chexanatomy.codec import load_codec
from chexanatomy.vqvae import run_inference
torch.set_grad_enabled(False)
codec, chunk, n = load_codec().eval(), int(sys.argv[1]), int(sys.argv[2])
grid = codec.quantizer.codebook[torch.randint(0, 128, (n, 16))].reshape(n, 4, 4, -1).permute(0, 3, 1, 2)
if chunk:
    run_inference(codec.decoder, grid, chunk)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def decoder_peak_memory_mb(chunk_size: int, masks: int = 4096) -> float:
    """Peak resident memory (MB, Linux ru_maxrss) of a fresh Python process that loads the codec and decodes
    ``masks`` masks in passes of ``chunk_size`` (0: loads the codec and the codes only, the baseline)."""
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, str(chunk_size), str(masks)], cwd=root,
                         capture_output=True, text=True, check=True)  # fmt: skip
    return round(float(out.stdout.strip().splitlines()[-1]), 1)


def network_table(nets: list[dict]) -> str:
    """Markdown table: arithmetic, masks per pass, median (min-max) masks/s of encoder + decoder."""
    rows = "\n".join(
        f"| {net['precision']} | {net['chunk_size']} | {net['median']:.0f} ({net['min']:.0f}-{net['max']:.0f}) |"
        for net in nets
    )
    header = "| arithmetic | masks per pass | encoder + decoder, masks/s: median (min-max) |\n| --- | --- | --- |\n"
    return header + rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus_dir", default="outputs/drr")
    ap.add_argument("--codec", default=None, help="codec folder, vae-oid .npz or Hub id (default: the bundled one)")
    ap.add_argument("--splits", nargs="+", default=["validation", "test"])
    ap.add_argument("--max_images", type=int, default=0, help="0 = all")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    codec = load_codec(args.codec or "default")
    images = list(full_masks(args.corpus_dir, tuple(args.splits)))
    if args.max_images:
        images = images[: args.max_images]
    results = {}
    for label, (widen, resize, precision) in VARIANTS.items():
        tokenizer = MaskTokenizer(codec, resize, widen, precision)
        speed = end_to_end_speed(tokenizer, images, batched=True)
        per_image = end_to_end_speed(tokenizer, images, batched=False)
        results[label] = {**summarise(*evaluate(tokenizer, images)), "masks_per_s": round(speed, 1),
                          "masks_per_s_image_by_image": round(per_image, 1)}  # fmt: skip
        r = results[label]
        print(f"{label:>24}: macro Dice {r['macro_dice']:.4f} (ceiling {r['ceiling_macro']:.4f}, codec/ceiling "
              f"{r['codec_over_ceiling']:.3f}), worst {r['min_structure'][0]} {r['min_structure'][1]:.3f}, "
              f"encode+decode {speed:.0f} masks/s ({per_image:.0f} image by image); "
              f"multipart unions (no mask tokens): {r['multipart_not_tokenised']}")
    nets = network_speeds(codec, (INFERENCE_CHUNK, 512))
    results["network_only_masks_per_s"] = nets
    for net in nets:
        print(f"VQ-VAE alone, {net['precision']}, 512 masks in passes of {net['chunk_size']}, "
              f"{torch.get_num_threads()} threads: encoder + decoder {net['median']:.0f} masks/s (median; "
              f"{net['min']:.0f}-{net['max']:.0f})")  # fmt: skip
    memory = {chunk: decoder_peak_memory_mb(chunk) for chunk in (0, INFERENCE_CHUNK, 4096)}
    results["decoder_peak_memory_mb_4096_masks"] = memory
    print(f"peak memory (MB) decoding 4,096 masks, by masks per pass (0: codec loaded, nothing decoded): {memory}")
    main_r = results["tight, bilinear"]
    print(f"goals: macro >= {GOALS['macro']}: {main_r['macro_dice'] >= GOALS['macro']}; every structure >= "
          f"{GOALS['every_structure']}: {main_r['min_structure'][1] >= GOALS['every_structure']}; codec/ceiling >= "
          f"{GOALS['codec_over_ceiling']}: {main_r['codec_over_ceiling'] >= GOALS['codec_over_ceiling']}; "
          f">= 2000 masks/s: float32 {main_r['masks_per_s'] >= 2000}, bfloat16 "
          f"{results['tight, bilinear, bfloat16 codec']['masks_per_s'] >= 2000}")
    root = Path(__file__).resolve().parents[1]
    (root / "bench" / "results" / "codec.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    doc = root / "docs" / "codec.md"
    doc.parent.mkdir(exist_ok=True)
    doc.write_text(codec_doc(results, nets, args, images), encoding="utf-8")
    print(f"wrote bench/results/codec.json and {doc}")


def codec_doc(results: dict, nets: list[dict], args, images: list) -> str:
    """docs/codec.md: the variant table, the network's own speed and the per-structure table."""
    main_r = results["tight, bilinear"]
    rows = "\n".join(
        f"| {k} | {v['macro_dice']:.4f} | {v['ceiling_macro']:.4f} | {v['codec_over_ceiling']:.3f} | "
        f"{v['min_structure'][0]} {v['min_structure'][1]:.3f} | {v['masks_per_s']:.0f} | "
        f"{v['masks_per_s_image_by_image']:.0f} |"
        for k, v in results.items()
        if k in VARIANTS
    )
    masks = sum(len(i[3]) for i in images)
    return (
        "# Anatomy mask codec: fidelity\n\nGenerated by `python bench/bench_codec.py` on the held-out subjects "
        f"({', '.join(args.splits)}) of `{args.corpus_dir}`; {masks} masks from {len(images)} images.\n\n"
        "Figures are over single structures; multipart unions (`ribs_left`, `ribs_right`, `costal_cartilages`) get no "
        f"mask tokens (their Dice through the codec: {main_r['multipart_not_tokenised']}).\n\n"
        "Speed: encode + decode of all these masks, each image's masks encoded in one call, best of 3 passes after a "
        "warm-up; the answers decoded in one batch, or image by image (~96 masks a call).\n\n"
        "| boxes, crop resize | macro Dice | ceiling | codec / ceiling | worst structure | masks/s, one batch | "
        "masks/s, image by image |\n| --- | --- | --- | --- | --- | --- | --- |\n"
        f"{rows}\n\nThe VQ-VAE's networks alone, 512 masks, {torch.get_num_threads()} CPU threads, masks/s "
        f"(8 alternating runs; the default pass is {INFERENCE_CHUNK} masks, "
        f"`chexanatomy.vqvae.INFERENCE_CHUNK`):\n\n{network_table(nets)}\n\n"
        "Peak memory of a fresh process decoding 4,096 masks (ru_maxrss): "
        + ", ".join(f"{mb:.0f} MB in passes of {c}" if c else f"{mb:.0f} MB with the codec loaded and nothing decoded"
                    for c, mb in results["decoder_peak_memory_mb_4096_masks"].items())  # fmt: skip
        + ".\n\n"
        "## Per structure (tight boxes, bilinear: the setting the corpus uses)\n\n"
        f"{markdown_table(main_r['per_structure'])}\n"
    )

if __name__ == "__main__":
    main()
