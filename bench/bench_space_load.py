"""Load test of the Space: concurrent ``gradio_client`` users, each sending a few requests for one example.

    python bench/bench_space_load.py --vlm bundled-vlm --unet bundled-unet --clients 20 --requests 2
    python bench/bench_space_load.py --url http://127.0.0.1:7860/          # against a Space already running

Without ``--url`` the app (``space/app.py``) is launched in this process on a free localhost port. Every client
is connected (it fetches the API description) before the clock starts; then all of them send their requests at
once, each waiting for its previous answer. Latency is one ``predict`` call as a user's client sees it: queue
wait + inference + downloading the overlays. The queue runs ``--concurrency`` requests at a time (the app's
default is 1: one model copy, CPU threads shared). Writes bench/results/space_load.json.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "space_load.json"


def space_app():
    """``space/app.py`` as a module (its own modules are then importable as ``space.*``)."""
    if "chexanatomy_space_app" not in sys.modules:
        spec = importlib.util.spec_from_file_location("chexanatomy_space_app", ROOT / "space" / "app.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["chexanatomy_space_app"] = module
        spec.loader.exec_module(module)
    return sys.modules["chexanatomy_space_app"]


def one_user(client, example: Path, structures: list[str], requests: int) -> tuple[list[float], list[str]]:
    """``requests`` sequential calls; returns (latencies in s of the successful ones, error messages)."""
    from gradio_client import handle_file

    latencies, errors = [], []
    for _ in range(requests):
        start = time.perf_counter()
        try:
            client.predict(handle_file(str(example)), [], structures, api_name="/segment")
            latencies.append(time.perf_counter() - start)
        except Exception as error:  # a load test counts failures instead of stopping at the first
            errors.append(f"{type(error).__name__}: {error}")
    return latencies, errors


def run_load(url: str, example: Path, clients: int, requests: int, structures: list[str]) -> dict:
    """Connect ``clients`` clients, then let each send ``requests`` requests at once; latency summary + errors."""
    from gradio_client import Client

    with ThreadPoolExecutor(max_workers=clients) as pool:
        users = list(pool.map(lambda _: Client(url, verbose=False), range(clients)))
        start = time.perf_counter()
        outcomes = list(pool.map(lambda c: one_user(c, example, structures, requests), users))
        wall = time.perf_counter() - start
    latencies = [t for times, _ in outcomes for t in times]
    errors = [e for _, errs in outcomes for e in errs]
    return {
        "clients": clients,
        "requests_per_client": requests,
        "requests": clients * requests,
        "errors": len(errors),
        "error_messages": errors[:5],
        "latency_s": summarise(latencies),
        "wall_s": round(wall, 2),
        "requests_per_s": round(len(latencies) / wall, 3) if wall else None,
    }


def summarise(latencies: list[float]) -> dict:
    """p50 / p95 / min / mean / max in seconds (None when no request succeeded)."""
    if not latencies:
        return {"p50": None, "p95": None, "min": None, "mean": None, "max": None}
    values = np.asarray(latencies)
    stats = {"p50": np.percentile(values, 50), "p95": np.percentile(values, 95), "min": values.min()}
    stats |= {"mean": values.mean(), "max": values.max()}
    return {k: round(float(v), 3) for k, v in stats.items()}


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_local(args: argparse.Namespace):
    """(demo, url): the app on ``args.vlm``/``args.unet``, serving in a thread."""
    app = space_app()
    vlm, unet = app.load_model(args.vlm, "vlm", args.device), app.load_model(args.unet, "unet", args.device)
    demo = app.build_demo(vlm, unet, concurrency=args.concurrency, queue_size=max(64, 2 * args.clients))
    _, url, _ = app.launch(demo, "127.0.0.1", free_port(), block=False)
    return demo, url


def make_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vlm", default="bundled-vlm")
    parser.add_argument("--unet", default="bundled-unet")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--url", default=None, help="a running Space instead of launching one here")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--requests", type=int, default=2, help="per client, sequential")
    parser.add_argument("--concurrency", type=int, default=1, help="the launched app's queue concurrency")
    parser.add_argument("--structures", nargs="+", default=None, help="default: the app's default selection")
    parser.add_argument("--example", default=None, help="default: the first bundled example")
    parser.add_argument("--out", default=str(RESULTS))
    return parser


def main(args: argparse.Namespace) -> dict:
    """Run the load test, write the JSON, print a one-line summary."""
    from gradio_client import Client

    space_app()  # its modules become importable as space.*
    load_before = round(os.getloadavg()[0], 2)  # other work on the machine skews every figure
    examples, selection = (importlib.import_module(f"space.{m}") for m in ("bundled_examples", "selection"))
    example = Path(args.example) if args.example else examples.load_examples(examples.EXAMPLES_DIR)[0].image
    structures = args.structures or list(selection.DEFAULT_STRUCTURES)
    demo, url = (None, args.url) if args.url else start_local(args)
    try:
        one_user(Client(url, verbose=False), example, structures, 1)  # warm-up: first-call costs off the clock
        result = run_load(url, example, args.clients, args.requests, structures)
    finally:
        if demo is not None:
            demo.close()
    result = {
        "url": args.url or "local",
        "vlm": args.vlm,
        "unet": args.unet,
        "concurrency": args.concurrency,
        "example": example.name,
        "structures": structures,
        **result,
        "cpus": os.cpu_count(),
        "load_average_1m_before": load_before,
        "gradio": importlib.metadata.version("gradio"),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    lat = result["latency_s"]
    print(
        f"{result['requests']} requests from {args.clients} clients: {result['errors']} errors, "
        f"p50 {lat['p50']} s, p95 {lat['p95']} s, {result['requests_per_s']} req/s -> {args.out}"
    )
    return result


if __name__ == "__main__":
    main(make_parser().parse_args())
