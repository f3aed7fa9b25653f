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
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from chexanatomy.codec import load_default_codec
from chexanatomy.mask_tokens import MaskTokenizer, codec_precision, crop_masks, paste_mask, pixel_boxes, tight_boxes
from chexanatomy.vqvae import INFERENCE_CHUNK, MaskVQVAE, run_inference
from train.codec_data import full_masks, tokenisable

VARIANTS = {
    "tight, bilinear": (0, "bilinear", "float32"),
    "tight, nearest": (0, "nearest", "float32"),
    "widened 10 px, nearest": (10, "nearest", "float32"),
    "widened 10 px, bilinear": (10, "bilinear", "float32"),
    "tight, bilinear, bfloat16 codec": (0, "bilinear", "bfloat16"),
}
GOALS = {"macro": 0.95, "every_structure": 0.85, "codec_over_ceiling": 0.97}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))


def ceiling_masks(masks: np.ndarray, widen: int, resize: str) -> list[np.ndarray]:
    """Masks after crop -> 64x64 -> back, without the codec (the representation's own limit)."""
    hw = masks.shape[1:]
    boxes = pixel_boxes(tight_boxes(masks), hw, widen)
    crops = crop_masks(masks, boxes, resize)
    return [paste_mask(2 * c - 1, b.astype(float), hw) for c, b in zip(crops, boxes, strict=True)]


def evaluate(tokenizer: MaskTokenizer, images) -> tuple[dict, dict, float]:
    """Per-structure lists of codec Dice and ceiling Dice, and the masks/s of encode + decode."""
    codec_d, ceil_d = defaultdict(list), defaultdict(list)
    n_masks, seconds = 0, 0.0
    _, _, hw, names, masks = images[0]  # warm-up: oneDNN builds its kernels on the first call of each shape
    tokenizer.decode_batch([" ; ".join(tokenizer.encode(masks, names))], [hw])
    for _, _, hw, names, masks in images:
        t0 = time.perf_counter()
        texts = tokenizer.encode(masks, names)
        decoded = tokenizer.decode_batch([" ; ".join(texts)], [hw])[0]
        seconds += time.perf_counter() - t0
        n_masks += len(names)
        ceiling = ceiling_masks(masks, tokenizer.widen_px, tokenizer.resize)
        for name, mask, obj, ceil in zip(names, masks, decoded, ceiling, strict=True):
            codec_d[name].append(dice(mask, obj.mask) if obj.valid else 0.0)
            ceil_d[name].append(dice(mask, ceil))
    return codec_d, ceil_d, n_masks / seconds


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


def network_speed(codec: MaskVQVAE, precision: str, chunk_size: int, batch: int = 512) -> dict:
    """Masks/s of the VQ-VAE's two networks alone (no cropping, pasting or text): the floor under encode + decode.

    A batch of ``batch`` masks runs through ``run_inference`` in chunks of ``chunk_size`` (``batch``: one pass).
    """
    x = 2 * (torch.rand(batch, 1, 64, 64) > 0.5).float() - 1
    grid = codec.quantizer.codebook[codec.encode_indices((x[:, 0] + 1) / 2)]
    grid = grid.reshape(batch, 4, 4, -1).permute(0, 3, 1, 2)
    runs = {"encoder": (codec.encoder, x), "decoder": (codec.decoder, grid)}
    out = {}
    for label, (layers, inputs) in runs.items():
        with codec_precision(codec, precision):
            run_inference(layers, inputs, chunk_size)  # warm-up
            t0 = time.perf_counter()
            for _ in range(3):
                run_inference(layers, inputs, chunk_size)
        out[label] = round(3 * batch / (time.perf_counter() - t0), 1)
    out["encoder_plus_decoder"] = round(1 / (1 / out["encoder"] + 1 / out["decoder"]), 1)
    return out


def network_table(nets: list[dict]) -> str:
    """Markdown table: arithmetic, masks per pass, encoder, decoder and both, masks/s."""
    rows = "\n".join(
        f"| {net['precision']} | {net['chunk_size']} | {net['encoder']:.0f} | {net['decoder']:.0f} | "
        f"{net['encoder_plus_decoder']:.0f} |"
        for net in nets
    )
    return "| arithmetic | masks per pass | encoder | decoder | both |\n| --- | --- | --- | --- | --- |\n" + rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus_dir", default="outputs/drr")
    ap.add_argument("--codec", default=None, help="codec folder (default: the bundled one)")
    ap.add_argument("--splits", nargs="+", default=["validation", "test"])
    ap.add_argument("--max_images", type=int, default=0, help="0 = all")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    codec = load_default_codec() if args.codec is None else MaskVQVAE.from_pretrained(args.codec)
    codec.eval()
    images = list(full_masks(args.corpus_dir, tuple(args.splits)))
    if args.max_images:
        images = images[: args.max_images]
    results = {}
    for label, (widen, resize, precision) in VARIANTS.items():
        codec_d, ceil_d, speed = evaluate(MaskTokenizer(codec, resize, widen, precision), images)
        results[label] = {**summarise(codec_d, ceil_d), "masks_per_s": round(speed, 1)}
        r = results[label]
        print(f"{label:>24}: macro Dice {r['macro_dice']:.4f} (ceiling {r['ceiling_macro']:.4f}, codec/ceiling "
              f"{r['codec_over_ceiling']:.3f}), worst {r['min_structure'][0]} {r['min_structure'][1]:.3f}, "
              f"encode+decode {speed:.0f} masks/s; multipart unions (no mask tokens): {r['multipart_not_tokenised']}")
    nets = [{"precision": p, "chunk_size": c, **network_speed(codec, p, c)}
            for p in ("float32", "bfloat16") for c in (INFERENCE_CHUNK, 512)]  # fmt: skip
    results["network_only_masks_per_s"] = nets
    for net in nets:
        print(f"VQ-VAE alone, {net['precision']}, 512 masks in passes of {net['chunk_size']}, "
              f"{torch.get_num_threads()} threads: encoder {net['encoder']:.0f}/s, decoder {net['decoder']:.0f}/s, "
              f"both {net['encoder_plus_decoder']:.0f} masks/s")  # fmt: skip
    main_r = results["tight, bilinear"]
    print(f"goals: macro >= {GOALS['macro']}: {main_r['macro_dice'] >= GOALS['macro']}; every structure >= "
          f"{GOALS['every_structure']}: {main_r['min_structure'][1] >= GOALS['every_structure']}; codec/ceiling >= "
          f"{GOALS['codec_over_ceiling']}: {main_r['codec_over_ceiling'] >= GOALS['codec_over_ceiling']}; "
          f">= 2000 masks/s: float32 {main_r['masks_per_s'] >= 2000}, bfloat16 "
          f"{results['tight, bilinear, bfloat16 codec']['masks_per_s'] >= 2000}")
    root = Path(__file__).resolve().parents[1]
    (root / "bench" / "results" / "codec.json").write_text(json.dumps(results, indent=2) + "\n")
    doc = root / "docs" / "codec.md"
    doc.parent.mkdir(exist_ok=True)
    doc.write_text(codec_doc(results, nets, args, images))
    print(f"wrote bench/results/codec.json and {doc}")


def codec_doc(results: dict, nets: list[dict], args, images: list) -> str:
    """docs/codec.md: the variant table, the network's own speed and the per-structure table."""
    main_r = results["tight, bilinear"]
    rows = "\n".join(
        f"| {k} | {v['macro_dice']:.4f} | {v['ceiling_macro']:.4f} | {v['codec_over_ceiling']:.3f} | "
        f"{v['min_structure'][0]} {v['min_structure'][1]:.3f} | {v['masks_per_s']:.0f} |"
        for k, v in results.items()
        if k in VARIANTS
    )
    masks = sum(len(i[3]) for i in images)
    return (
        "# Anatomy mask codec: fidelity\n\nGenerated by `python bench/bench_codec.py` on the held-out subjects "
        f"({', '.join(args.splits)}) of `{args.corpus_dir}`; {masks} masks from {len(images)} images.\n\n"
        "Figures are over single structures; multipart unions (`ribs_left`, `ribs_right`, `costal_cartilages`) get no "
        f"mask tokens (their Dice through the codec: {main_r['multipart_not_tokenised']}).\n\n"
        "| boxes, crop resize | macro Dice | ceiling | codec / ceiling | worst structure | masks/s |\n"
        "| --- | --- | --- | --- | --- | --- |\n"
        f"{rows}\n\nThe VQ-VAE's networks alone, 512 masks, {torch.get_num_threads()} CPU threads, masks/s (the "
        f"default pass is {INFERENCE_CHUNK} masks, `chexanatomy.vqvae.INFERENCE_CHUNK`):\n\n{network_table(nets)}\n\n"
        "## Per structure (tight boxes, bilinear: the setting the corpus uses)\n\n"
        f"{markdown_table(main_r['per_structure'])}\n"
    )

if __name__ == "__main__":
    main()
