"""Benchmark: one 512x512 PA view of the embedded CT with every structure mask, ours vs diffdrr's Siddon vs nanodrr.

    python bench/bench_render.py                 # CPU: ~4 min (diffdrr's Siddon takes ~70 s per call here)
    python bench/bench_render.py --skip-anchor   # our figures only
    python bench/bench_render.py --device cuda   # on a GPU: also images/s for batches of poses; nanodrr's Triton kernel

Prints seconds per image for the three renderers measured in this run, side by side, and their ratios, then the Dice
of every structure's mask against diffdrr Siddon's geometric path length (unit density) on the same view and
threshold. The anchors render the same CT, view and size with their own label outputs: diffdrr's Siddon with
``mask_to_channels=True`` (one density-weighted channel per label), nanodrr (``pip install nanodrr``; its pure-PyTorch
backend on the CPU, its fused Triton kernel on a GPU, 500 samples per ray) with the label map (one channel per label
value). Writes bench/results/render_<device>.json (render_<device>-partial.json when a column was skipped).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import checkout  # noqa: F401 - this checkout's parts on sys.path (bench/checkout.py)
import numpy as np
import torch

from chexanatomy.masks import dice
from dataset_builder.ct import load_embedded
from dataset_builder.geometry import Pose, rays, view_geometry
from dataset_builder.render import isocenter_of, make_projector, structure_paths

ANCHOR_CPU_S = 66.6  # docs/anchors.md: diffdrr Siddon + all labels, 512x512, this 2-core machine
ANCHOR_H200_S = 0.080  # docs/anchors.md: the same on an H200, B=1
NANODRR_CPU_S = 15.4  # docs/anchors.md: nanodrr's torch backend, image + 119 label channels, 512x512, this machine


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_ours(projector, id_to_structure, geometry, device, repeats):
    """Seconds per image: projection + per-structure masks (the corpus's per-view work)."""
    times = []
    if device.startswith("cuda"):
        projector.project(*rays(geometry))  # warm-up: CUDA context and kernels
    for _ in range(repeats):
        projector.release()  # each repeat pays the set-up a lone view pays (a CT's other views share it)
        sync(device)
        t0 = time.perf_counter()
        proj = projector.project(*rays(geometry))
        paths = structure_paths(proj.path_mm[0], proj.label_ids, id_to_structure)
        masks = {n: (p > 1.5).cpu().numpy() for n, p in paths.items()}
        masks = {n: m for n, m in masks.items() if m.any()}
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), paths, masks


def throughput(projector, geometry, batch, device, seconds=5.0):
    """Images/s for batches of random poses (GPU use case)."""
    rng = np.random.default_rng(0)
    poses = [Pose(tuple(rng.uniform(-5, 5, 3)), tuple(rng.uniform(-20, 20, 3))) for _ in range(batch)]
    sets = [rays(geometry, p) for p in poses]
    src, tgt = torch.stack([s for s, _ in sets]), torch.stack([t for _, t in sets])
    projector.project(src, tgt)  # warm-up
    sync(device)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        proj = projector.project(src, tgt)
        (proj.path_mm > 1.5).any()
        sync(device)
        n += batch
    return n / (time.perf_counter() - t0)



def anchor_seconds(ct, geometry, device):
    """diffdrr Siddon + mask_to_channels on the same view: one call on CPU (~1 min), median of 3 on a GPU."""
    from dataset_builder.reference import siddon_default_renderer

    render = siddon_default_renderer(ct, geometry, device)
    repeats = 3 if device.startswith("cuda") else 1
    if repeats > 1:
        render()  # warm-up
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        render()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def nanodrr_seconds(ct, geometry, device, labels=True):
    """nanodrr on the same CT and view: seconds per call (one on CPU, median of 3 on a GPU); None if not installed.

    ``labels``: render with the CT's label map (one output channel per label value, their sum the image), else the
    image alone. Its camera has columns along +x and rows along +y (image down) with the source at the origin, so
    our diffdrr-style camera-to-world pose (``geometry.camera_to_world``: rows along -y) gets its y axis flipped.
    """
    try:
        from nanodrr.data import Subject
        from nanodrr.drr import DRR
        from torchio import LabelMap, ScalarImage
    except ImportError:
        return None
    from dataset_builder.geometry import camera_to_world

    image = ScalarImage(tensor=torch.as_tensor(ct.hu, dtype=torch.float32)[None], affine=ct.affine)
    label = LabelMap(tensor=torch.as_tensor(ct.labels.astype(np.int16))[None], affine=ct.affine) if labels else None
    subject = Subject.from_images(image, label).to(device)
    n = geometry.size_px
    drr = DRR.from_carm_intrinsics(geometry.sid_mm, geometry.pixel_mm, geometry.pixel_mm, 0.0, 0.0, n, n,
                                   device=torch.device(device))  # fmt: skip
    pose = camera_to_world(geometry) @ np.diag([1.0, -1.0, 1.0, 1.0])
    rt_inv = torch.as_tensor(pose, dtype=torch.float32, device=device)[None]
    repeats = 3 if device.startswith("cuda") else 1
    if repeats > 1:
        drr(subject, rt_inv)  # warm-up: kernel compilation
    times = []
    with torch.no_grad():
        for _ in range(repeats):
            sync(device)
            t0 = time.perf_counter()
            drr(subject, rt_inv)
            sync(device)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def per_ct(ct, device):
    """One CT at the corpus recipe (``RenderSettings()``: 512 px, PA + lateral x 3 poses, every radiograph step):
    set-up seconds, seconds for every view (poses batched, ``render_subject``) and CTs/hour of this renderer."""
    from dataset_builder.render import RenderSettings, render_subject

    settings = RenderSettings()
    sync(device)
    t0 = time.perf_counter()
    make_projector(ct, device, settings)
    setup_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    views = render_subject(ct, settings, device)
    sync(device)
    render_s = time.perf_counter() - t0
    return {"views": len(views), "setup_s": round(setup_s, 2), "render_s": round(render_s, 2),
            "views_s": round(render_s - setup_s, 2), "cts_per_hour": round(3600 / render_s, 1),
            "cts_per_hour_without_setup": round(3600 / max(render_s - setup_s, 1e-6), 1)}  # fmt: skip


def accuracy(ct, geometry, masks, id_to_structure, device):
    from dataset_builder.reference import siddon_path_lengths

    ref = siddon_path_lengths(ct, geometry, device=device)
    ids = sorted(id_to_structure)
    ref_paths = structure_paths(ref[ids], ids, id_to_structure)
    out = {}
    for name, ours in masks.items():
        theirs = (ref_paths[name] > 1.5).numpy()
        if theirs.sum() + ours.sum() < 8:  # absent from this view for both (the corpus omits it too)
            continue
        out[name] = {"dice": round(dice(ours, theirs), 4), "area_px": int(theirs.sum())}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-anchor", action="store_true", help="no diffdrr Siddon (the slowest part on a CPU)")
    ap.add_argument("--skip-nanodrr", action="store_true")
    ap.add_argument("--per_ct", action="store_true", help="also a whole CT at the recipe (always on a GPU)")
    args = ap.parse_args()

    ct = load_embedded()
    t0 = time.perf_counter()
    projector, id_to_structure, _ = make_projector(ct, args.device)
    setup_s = time.perf_counter() - t0
    geometry = view_geometry("PA", args.size, isocenter_of(ct))
    ours_s, _, masks = time_ours(projector, id_to_structure, geometry, args.device, args.repeats)
    result = {
        "device": args.device, "machine": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(), "size_px": args.size, "structures": len(masks),
        "ours_s_per_image": round(ours_s, 3), "ct_setup_s": round(setup_s, 2),
    }  # fmt: skip
    print(f"ours: {ours_s:.2f} s per {args.size}x{args.size} PA image with {len(masks)} structure masks "
          f"(+{setup_s:.1f} s once per CT)")
    if args.device.startswith("cuda"):
        for batch in (1, 8, 16):
            ips = throughput(projector, geometry, batch, args.device)
            result[f"ours_images_per_s_batch{batch}"] = round(ips, 1)
            print(f"ours on GPU, batch {batch}: {ips:.1f} images/s with all masks "
                  f"(anchor H200: {1 / ANCHOR_H200_S:.1f}/s)")
        result["gpu_peak_memory_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 1)
    if args.per_ct or args.device.startswith("cuda"):
        result["per_ct"] = c = per_ct(ct, args.device)
        print(f"one CT at the recipe ({c['views']} views, poses batched, every radiograph step): {c['render_s']} s"
              f" = set-up {c['setup_s']} s (CPU: volume preparation) + views {c['views_s']} s -> "
              f"{c['cts_per_hour']} CTs/hour per {args.device} "
              f"({c['cts_per_hour_without_setup']} with the set-up on other cores)")  # fmt: skip
    table = [("ours: image + every structure mask", ours_s)]
    if not args.skip_anchor:
        anchor_s = anchor_seconds(ct, geometry, args.device)
        result.update(anchor_s_per_image=round(anchor_s, 2), speedup=round(anchor_s / ours_s, 1))
        anchor_ref = ANCHOR_H200_S if args.device.startswith("cuda") else ANCHOR_CPU_S
        table.append((f"diffdrr Siddon, image + label channels (docs/anchors.md: {anchor_ref} s)", anchor_s))
    if not args.skip_nanodrr:
        nano = {kind: nanodrr_seconds(ct, geometry, args.device, labels) for kind, labels in
                (("image", False), ("labels", True))}  # fmt: skip
        if nano["labels"] is None:
            print("nanodrr is not installed (pip install nanodrr): its column is left out")
        else:
            result.update(nanodrr_image_s=round(nano["image"], 3), nanodrr_labels_s=round(nano["labels"], 3),
                          speedup_vs_nanodrr=round(nano["labels"] / ours_s, 1))  # fmt: skip
            ref = "" if args.device.startswith("cuda") else f" (docs/anchors.md: {NANODRR_CPU_S} s)"
            table.append(("nanodrr, image only", nano["image"]))
            table.append((f"nanodrr, image + label channels{ref}", nano["labels"]))
    print(f"\n{'same CT, PA view, ' + str(args.size) + ' px, ' + args.device:72s} {'s/image':>8s} {'vs ours':>8s}")
    for name, seconds in table:
        print(f"{name:72s} {seconds:8.3f} {seconds / ours_s:7.1f}x")
    if not args.skip_anchor:
        acc = accuracy(ct, geometry, masks, id_to_structure, args.device)
        values = [v["dice"] for v in acc.values()]
        low = sorted((v["dice"], k) for k, v in acc.items())[:5]
        result.update(dice_min=min(values), dice_mean=round(float(np.mean(values)), 4), per_structure=acc)
        print(f"mask Dice vs Siddon path length > 1.5 mm: mean {np.mean(values):.4f}, min {min(values):.4f}, "
              f"{sum(v >= 0.98 for v in values)}/{len(values)} structures >= 0.98; lowest: {low}")
    # A run that skipped a column must not replace the full record the README quotes.
    partial = "-partial" if args.skip_anchor or args.skip_nanodrr else ""
    out = Path(__file__).parent / "results" / f"render_{args.device.split(':')[0]}{partial}.json"
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
