"""Benchmark: the corpus builder's engines on one fixture, CTs per hour and the ratio to one process.

    python bench/bench_scale.py                     # 6 subjects of the embedded CT, 256 px, PA + lateral
    python bench/bench_scale.py --subjects 8 --size_px 512

In one run, on the same subjects (pseudo-subjects of the embedded CT: each is read from its NIfTI files, deformed,
rendered with every mask and text target, and written):

* one process (torch on every core);
* ``--num_proc 2`` (forked workers, one torch thread each);
* ``--engine ray`` on a local Ray runtime with 1 and with 2 CPUs (workers); the runtime is started before the build
  is timed (its start-up is printed apart: a cluster starts once for thousands of CTs).

Each configuration builds into a fresh folder and checks its shards are byte-identical to the single process's.
Ray's overhead per CT is the part of Ray with 1 worker's wall time per CT not spent in the stages (read, render,
write), as a fraction of the single process's wall time per CT. Goals: Ray with 2 workers >= 1.7x one process;
overhead <= 5 %. The machine's load average is printed before and after: on a shared machine, compare ratios of one
run only. Writes bench/results/scale_cpu.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

from dataset_builder.build import BuildConfig, build

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("read_s", "render_s", "write_s")
GOALS = {"ray_2_vs_single": 1.7, "ray_overhead_per_ct": 0.05}


def shards(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((folder / "data").glob("*.parquet"))}


def timed_build(config: BuildConfig) -> tuple[dict, float]:
    t0 = time.perf_counter()
    summary = build(config)
    return summary, time.perf_counter() - t0


def run_ray(config: BuildConfig, workers: int) -> tuple[dict, float, float]:
    """(summary, build wall seconds, runtime start-up seconds) on a local Ray runtime with ``workers`` CPUs."""
    import ray

    from dataset_builder.ray_engine import start_local

    t0 = time.perf_counter()
    start_local(num_cpus=workers)
    startup = time.perf_counter() - t0
    try:
        summary, wall = timed_build(config)
    finally:
        ray.shutdown()
    return summary, wall, startup


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subjects", type=int, default=6)
    ap.add_argument("--size_px", type=int, default=256)
    args = ap.parse_args()
    base = dict(source="embedded", num_subjects=args.subjects, size_px=args.size_px, poses_per_view=1,
                views=["PA", "LAT"], device="cpu")  # fmt: skip
    load_before = os.getloadavg()
    rows, reference = [], None
    with tempfile.TemporaryDirectory() as tmp:
        runs = [("single process", {}, None), ("--num_proc 2", {"num_proc": 2}, None),
                ("ray, 1 worker", {"engine": "ray"}, 1), ("ray, 2 workers", {"engine": "ray"}, 2)]  # fmt: skip
        for name, extra, workers in runs:
            out = Path(tmp) / name.replace(" ", "_").replace(",", "")
            config = BuildConfig(output_dir=str(out), **base, **extra)
            if workers:
                summary, wall, startup = run_ray(config, workers)
            else:
                (summary, wall), startup = timed_build(config), None
            reference = reference or shards(out)
            stage_s = sum(summary[k] for k in STAGES)
            rows.append({
                "engine": name, "built": summary["built"], "wall_s": round(wall, 1),
                "cts_per_hour": round(3600 * summary["built"] / wall, 1), "s_per_ct": round(wall / summary["built"], 2),
                "stage_s_per_ct": {k: round(summary[k] / summary["built"], 2) for k in STAGES},
                "outside_stages_s_per_ct": round((wall * (workers or 1) - stage_s) / summary["built"], 2),
                "ray_startup_s": None if startup is None else round(startup, 1),
                "same_bytes_as_single": shards(out) == reference,
            })  # fmt: skip
    single = rows[0]
    for row in rows:
        row["ratio_to_single"] = round(row["cts_per_hour"] / single["cts_per_hour"], 2)
    ray1 = rows[2]
    overhead = (ray1["s_per_ct"] - sum(ray1["stage_s_per_ct"].values())) / single["s_per_ct"]
    result = {
        "fixture": f"{args.subjects} pseudo-subjects of the embedded CT, PA + LAT, 1 pose, {args.size_px} px",
        "cpus": os.cpu_count(), "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()], "runs": rows,
        "ray_overhead_per_ct": round(overhead, 3), "goals": GOALS,
    }  # fmt: skip
    print(f"{result['fixture']}; {result['cpus']} CPUs; load average before {result['load_average_before']}, "
          f"after {result['load_average_after']}")  # fmt: skip
    print(f"{'engine':16} {'CTs/hour':>9} {'s/CT':>6} {'x single':>9}  read/render/write s per CT   same bytes  "
          "start-up")
    for r in rows:
        stages = "/".join(f"{v:.2f}" for v in r["stage_s_per_ct"].values())
        startup = "" if r["ray_startup_s"] is None else f"{r['ray_startup_s']:.1f} s"
        print(f"{r['engine']:16} {r['cts_per_hour']:9.0f} {r['s_per_ct']:6.2f} {r['ratio_to_single']:9.2f}  "
              f"{stages:27}  {str(r['same_bytes_as_single']):10}  {startup}")  # fmt: skip
    print(f"ray 2 workers / single: {rows[3]['ratio_to_single']:.2f}x (goal >= {GOALS['ray_2_vs_single']}x); "
          f"ray overhead per CT: {overhead:.1%} of single-process time per CT "
          f"(goal <= {GOALS['ray_overhead_per_ct']:.0%})")
    out = ROOT / "bench" / "results" / "scale_cpu.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
