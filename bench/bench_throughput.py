"""Benchmark: end-to-end corpus throughput on the TotalSegmentator-layout path, CTs per hour.

    python bench/bench_throughput.py                       # 3 subjects, CPU (~3 min after a one-time ~3 min setup)
    python bench/bench_throughput.py --subjects 8 --num_proc 2 --device cuda

The embedded CT is written once in the TotalSegmentator dataset layout (``ct.nii.gz`` + one
``segmentations/<name>.nii.gz`` per structure, gzip-compressed as in the public dataset) under
``outputs/bench_totalseg/``; the benchmark subjects are links to it, so every subject really reads and
decompresses its files. Each subject is read, rendered (PA + lateral, 3 poses each, 512 px, all masks, text
targets) and written; the time is split into read / render (+ tokens) / write. Writes
bench/results/throughput_<device>.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import checkout  # noqa: F401 - this checkout's parts on sys.path (bench/checkout.py)
import nibabel as nib
import numpy as np

from chexanatomy.locate import resolve_device
from dataset_builder.build import BuildConfig, build
from dataset_builder.ct import load_embedded

ROOT = Path(__file__).resolve().parents[1]


def totalseg_fixture(folder: Path) -> Path:
    """The embedded CT in TotalSegmentator's layout (written once, reused)."""
    done = folder / ".complete"
    if done.exists():
        return folder
    ct = load_embedded()
    folder.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(ct.hu.astype(np.int16), ct.affine), folder / "ct.nii.gz")
    (folder / "segmentations").mkdir(exist_ok=True)
    for label_id, name in sorted(ct.label_names.items()):
        mask = (ct.labels == label_id).astype(np.uint8)
        nib.save(nib.Nifti1Image(mask, ct.affine), folder / "segmentations" / f"{name}.nii.gz")
    done.touch()
    return folder


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subjects", type=int, default=3)
    ap.add_argument("--num_proc", type=int, default=1)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--size_px", type=int, default=512)
    args = ap.parse_args()
    source = totalseg_fixture(ROOT / "outputs" / "bench_totalseg" / "embedded")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "collection"
        root.mkdir()
        for i in range(args.subjects):
            (root / f"s{i:04d}").symlink_to(source, target_is_directory=True)
        config = BuildConfig(
            source="totalsegmentator", root=str(root), output_dir=str(Path(tmp) / "corpus"),
            size_px=args.size_px, num_proc=args.num_proc, device=args.device,
        )  # fmt: skip
        t0 = time.perf_counter()
        s = build(config)
        wall = time.perf_counter() - t0
        shutil.rmtree(Path(tmp) / "corpus")
    per_ct = {k: s[k] / max(s["built"], 1) for k in ("read_s", "render_s", "write_s")}
    result = {
        "subjects": s["built"], "failed": s["failed"], "images": s["images"], "num_proc": args.num_proc,
        "device": resolve_device(config.device), "wall_s": round(wall, 1),
        "cts_per_hour": round(3600 * s["built"] / wall, 1),
        "per_ct_s": {k: round(v, 1) for k, v in per_ct.items()},
    }  # fmt: skip
    share = {k: v / sum(per_ct.values()) for k, v in per_ct.items()}
    print(f"{s['built']} CTs ({s['images']} images) in {wall:.0f} s with {args.num_proc} process(es): "
          f"{result['cts_per_hour']:.0f} CTs/hour; per CT: read {per_ct['read_s']:.1f} s ({share['read_s']:.0%}), "
          f"render + tokens {per_ct['render_s']:.1f} s ({share['render_s']:.0%}), write {per_ct['write_s']:.1f} s "
          f"({share['write_s']:.0%})")  # fmt: skip
    out = ROOT / "bench" / "results" / f"throughput_{resolve_device(config.device)}.json"
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
