"""Benchmark: the default corpus build (512 px, PA + lateral x 3 poses, every radiograph step on), this checkout
against the one-process build of an earlier revision (the anchor), in one run, as a ratio; and where a CT's time goes.

    python bench/bench_build_speed.py                          # 2 pseudo-subjects per build, anchor = 582c353
    python bench/bench_build_speed.py --subjects 4 --num_proc 1 2 --profile
    python bench/bench_build_speed.py --profile --skip-builds  # the per-stage profile alone (one CT)

Each build is ``python -m dataset_builder build --source embedded`` in a fresh process (imports, codec and the base CT
are loaded inside it, as a user's build does) into a temporary folder; the builds alternate (anchor, ours, anchor,
ours, ... for ``--rounds``), so a change in the machine's load hits both. The anchor runs from ``git archive <rev>``
(cached under ``outputs/bench_checkouts/``). CTs/hour is from each build's own wall time; the shards of this checkout's
builds are compared byte for byte (any ``--num_proc`` must give the same bytes), and with the anchor's (the same
until a corpus format changed the content: 2.2 ends the lung fields at their costophrenic angles).

``--profile`` runs one subject of this checkout's build in this process under ``cProfile`` and prints seconds per CT and
per view for every stage (read, deform, the projector's set-up, the projection, each radiograph step, masks, checks,
mask encoding and codec, PNG/Parquet, write) beside the projection alone (the floor: what ``bench_render.py``
measures). Writes bench/results/build_speed_cpu.json.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import checkout  # noqa: F401 - this checkout's parts on sys.path (bench/checkout.py)

ROOT = Path(__file__).resolve().parents[1]
SUMMARY = re.compile(r"built (\d+) \((\d+) images\).* in ([\d.]+) s")

# Stage -> the functions (file name, function name[, caller's function name]) whose cumulative time it is.
STAGES = {
    "read CT": [("ct.py", "load_embedded"), ("ct.py", "read_totalsegmentator_subject"), ("ct.py", "read_pair")],
    "deform (pseudo-subject)": [("deform.py", "deform")],
    "set-up: outside-body removal": [("ct.py", "remove_outside_body")],
    "set-up: virtual non-contrast": [("realism.py", "virtual_non_contrast")],
    "set-up: extend body": [("realism.py", "extend_body")],
    "set-up: attenuation channels": [("appearance.py", "attenuation_channels")],
    "set-up: projector (label boxes)": [("projector.py", "__init__")],
    "framing (lungs' box)": [("ct.py", "world_box_of")],
    "project (image + every label)": [("projector.py", "project_views"), ("projector.py", "project")],
    "radiograph: scatter": [("radiograph.py", "box_blur", "display")],
    "radiograph: detector blur": [("radiograph.py", "gaussian_blur", "display")],
    "radiograph: window": [("radiograph.py", "normalise_percentiles", "display")],
    "radiograph: range compression": [
        ("radiograph.py", "box_blur", "unsharp_mask"),
        ("radiograph.py", "normalise_percentiles", "apply_style"),
    ],
    "radiograph: edge enhancement": [("radiograph.py", "gaussian_blur", "unsharp_mask")],
    "radiograph: look-up table": [("radiograph.py", "sigmoid_lut")],
    "radiograph: collimation": [("radiograph.py", "collimate")],
    "radiograph: marker": [("radiograph.py", "burn_marker")],
    "masks (threshold, occluders)": [("render.py", "_masks")],
    "structure path sums": [("render.py", "structure_paths")],
    "view checks": [("checks.py", "check_views")],
    "codec (VQ-VAE encoder)": [("vqvae.py", "encode_indices")],
    "mask encoding (boxes, crops, text)": [("corpus.py", "to_row")],  # minus the codec, below
    "PNG + Parquet (shard bytes)": [("corpus.py", "shard_bytes")],
    "write shard": [("storage.py", "write")],
}
FLOOR = "project (image + every label)"


def anchor_checkout(rev: str) -> Path:
    """This repository's tree at ``rev`` (``git archive``), extracted once under ``outputs/bench_checkouts/``."""
    folder = ROOT / "outputs" / "bench_checkouts" / rev
    if not (folder / ".complete").exists():
        folder.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
        (folder / ".complete").touch()
    return folder


def timed_build(code: Path, out: Path, subjects: int, size_px: int, num_proc: int) -> dict:
    """One build of ``subjects`` pseudo-subjects with the code in ``code``; its own summary line, parsed."""
    env = {**os.environ, "PYTHONPATH": str(code), "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    cmd = [sys.executable, "-m", "dataset_builder", "build", "--source", "embedded", "--num_subjects", str(subjects),
           "--size_px", str(size_px), "--num_proc", str(num_proc), "--output_dir", str(out)]  # fmt: skip
    done = subprocess.run(cmd, cwd=code, env=env, capture_output=True, text=True)
    match = SUMMARY.search(done.stdout)
    if done.returncode or not match or int(match.group(1)) != subjects:
        raise RuntimeError(f"build in {code} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    seconds = float(match.group(3))
    return {"seconds": seconds, "images": int(match.group(2)), "cts_per_hour": 3600 * subjects / seconds}


def shards(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((folder / "data").glob("*.parquet"))}


def compare_builds(args) -> dict:
    """Interleaved builds: the anchor (one process) and ours (each ``--num_proc``); rates, ratios, same bytes."""
    anchor = anchor_checkout(args.anchor_rev)
    runs = {"anchor": [], **{f"ours_num_proc_{n}": [] for n in args.num_proc}}
    same, anchor_same = True, True
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            built = {}
            for name in runs:
                out = Path(tmp) / f"{name}-{r}"
                code, num_proc = (anchor, 1) if name == "anchor" else (ROOT, int(name.rsplit("_", 1)[1]))
                runs[name].append(timed_build(code, out, args.subjects, args.size_px, num_proc))
                print(f"round {r + 1}: {name}: {runs[name][-1]['cts_per_hour']:.1f} CTs/hour", flush=True)
                built[name] = shards(out)
            ours = [v for k, v in built.items() if k != "anchor"]
            same = same and all(b == ours[0] for b in ours)
            anchor_same = anchor_same and built["anchor"] == ours[0]
    rates = {name: sum(x["cts_per_hour"] for x in v) / len(v) for name, v in runs.items()}
    ratios = {k: round(v / rates["anchor"], 2) for k, v in rates.items()}
    rounded = {k: round(v, 1) for k, v in rates.items()}
    return {"runs": runs, "cts_per_hour": rounded, "ratio_to_anchor": ratios, "same_bytes": same,
            "same_bytes_as_anchor": anchor_same}  # fmt: skip


def _stage_seconds(stats: pstats.Stats, functions) -> float:
    total = 0.0
    for key, (_, _, _, cumulative, callers) in stats.stats.items():
        for spec in functions:
            if not (key[0].endswith("/" + spec[0]) and key[2] == spec[1]):
                continue
            if len(spec) == 2:
                total += cumulative
            else:  # only the time spent under the named caller
                total += sum(c[3] for caller, c in callers.items() if caller[2] == spec[2])
    return total


def profile(args) -> dict:
    """Seconds per CT of every stage of this checkout's build of one subject (this process, under cProfile)."""
    from dataset_builder.build import BuildConfig, build

    with tempfile.TemporaryDirectory() as tmp:
        config = BuildConfig(source="embedded", num_subjects=1, size_px=args.size_px, output_dir=tmp)
        profiler = cProfile.Profile()
        t0 = time.perf_counter()
        profiler.runcall(build, config)
        wall = time.perf_counter() - t0
    stats = pstats.Stats(profiler)
    per_ct = {name: _stage_seconds(stats, functions) for name, functions in STAGES.items()}
    per_ct["mask encoding (boxes, crops, text)"] -= per_ct["codec (VQ-VAE encoder)"]
    per_ct["radiograph: range compression"] = max(0.0, per_ct["radiograph: range compression"])
    views = len(config.views) * config.poses_per_view
    floor = per_ct[FLOOR] / views
    print(f"\nper-stage profile, one CT ({views} views at {args.size_px} px), this checkout, one process; build wall "
          f"{wall:.1f} s (cProfile adds a little)")  # fmt: skip
    print(f"{'stage':38s} {'s per CT':>9s} {'s per view':>11s} {'x projection':>13s}")
    for name, seconds in per_ct.items():
        print(f"{name:38s} {seconds:9.2f} {seconds / views:11.3f} {seconds / views / floor:13.2f}")
    print(f"the stages above: {sum(per_ct.values()):.1f} s of the build's {wall:.1f} s (the rest: the codec's load, "
          "the card, bookkeeping; cProfile's attribution is approximate)")  # fmt: skip
    print(f"projection-only floor: {floor:.2f} s per view; the whole build: {wall / views:.2f} s per view "
          f"({wall / views / floor:.1f}x the floor)")  # fmt: skip
    return {"wall_s": round(wall, 2), "views": views, "floor_s_per_view": round(floor, 3),
            "per_ct_s": {k: round(v, 3) for k, v in per_ct.items()}}  # fmt: skip


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--anchor_rev", default="582c353", help="the revision whose one-process build is the anchor")
    ap.add_argument("--subjects", type=int, default=2)
    ap.add_argument("--size_px", type=int, default=512)
    ap.add_argument("--num_proc", type=int, nargs="+", default=[1, 2], help="our builds' --num_proc values")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--profile", action="store_true", help="also print the per-stage profile of one CT")
    ap.add_argument("--skip-builds", action="store_true", help="only the profile")
    args = ap.parse_args()
    load = os.getloadavg()[0]
    result = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
              "load_average_before": round(load, 2), "size_px": args.size_px, "subjects": args.subjects}  # fmt: skip
    print(f"load average before: {load:.2f} on {os.cpu_count()} CPUs (other work slows both builds alike)")
    if not args.skip_builds:
        result["builds"] = compare_builds(args)
        b = result["builds"]
        for name, rate in b["cts_per_hour"].items():
            print(f"{name:20s} {rate:7.1f} CTs/hour  x{b['ratio_to_anchor'][name]:.2f} the anchor ({args.anchor_rev}, "
                  f"one process)")  # fmt: skip
        print(f"same shard bytes in every build of this checkout: {'yes' if b['same_bytes'] else 'NO'}")
        print(f"same shard bytes as the anchor: {'yes' if b['same_bytes_as_anchor'] else 'no'} (corpus formats since "
              "the anchor change the masks: 2.2 ends the lung fields at their costophrenic angles)")
    if args.profile:
        result["profile"] = profile(args)
    result["load_average_after"] = round(os.getloadavg()[0], 2)
    out = ROOT / "bench" / "results" / "build_speed_cpu.json"
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
