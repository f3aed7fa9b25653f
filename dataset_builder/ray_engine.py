"""The Ray engine (``--engine ray``): the two stages of every subject as Ray tasks, on one machine or a cluster.

Each subject is a chain of two tasks:

* read (``stages.read_stage``; 1 CPU): read through the input cache, validate, deform. Its ``CTVolume`` goes into
  Ray's object store, not to the driver.
* render (``stages.render_stage``): a ``1 / RENDERS_PER_GPU`` share of a GPU and 1 CPU when the cluster has GPUs
  (``--device auto`` or ``cuda``), else 1 CPU. Several render tasks share a GPU because most of a CT's render is CPU
  work (preparing the volume, the radiograph steps, masks, tokens, Parquet) around one batched projection of all its
  views; one task per GPU would leave it idle most of the time. It returns the shard's Parquet bytes; the driver
  (``build.py``) writes them into ``--output_dir``, so the folder needs to be reachable from the driver only, and the
  bytes are those of the local engine.

Ray reruns a task whose worker process or node died once (``max_retries=1``; a lost CT is rebuilt from its read task
by Ray's lineage). A subject whose task dies a second time is recorded as failed with the reason, never retried
forever. At most ``CPUs + 2 x RENDERS_PER_GPU x GPUs`` subjects are in flight, so the object store holds a bounded
number of CTs.

Without ``--ray_address`` a local Ray runtime with ``--num_proc`` CPUs is started and stopped; with one, the build
joins that cluster (every node needs this package installed, and the remote inputs' credentials in its environment).
A runtime already started in this process (``ray.init`` in a notebook or a test) is used as it is.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from .local_engine import WORKER_DIED
from .sources import Subject
from .stages import failure, read_stage, render_stage

# The folder holding this package's top-level package (a checkout, or site-packages): on local workers' path.
PACKAGE_ROOT = str(Path(sys.modules[__package__.split(".")[0]].__file__).resolve().parents[1])
MAX_RETRIES = 1  # a task whose worker dies runs once more; a second death is the subject's failure
RENDERS_PER_GPU = 4  # render tasks sharing one GPU: their CPU parts overlap, each GPU part is a fraction of a second


def run(subjects: list[Subject], config, finish: Callable[[dict], dict]) -> list[dict]:
    """``finish(result)`` of every subject (in this process, as each completes), sorted by subject id.

    Runs in the current Ray runtime (see ``runtime``).
    """
    import ray

    resources = ray.cluster_resources()
    device, render_resources = _render_placement(config.device, resources)
    read = ray.remote(num_cpus=1, num_returns=2, max_retries=MAX_RETRIES)(_read)
    render = ray.remote(max_retries=MAX_RETRIES, **render_resources)(_render)
    config_ref = ray.put(config)
    window = max(1, int(resources.get("CPU", 1) + 2 * RENDERS_PER_GPU * resources.get("GPU", 0)))
    queue, in_flight, results = list(reversed(subjects)), {}, []
    while queue or in_flight:
        while queue and len(in_flight) < window:
            subject = queue.pop()
            status, ct = read.remote(subject)
            in_flight[render.remote(subject.subject_id, status, ct, config_ref, device)] = subject.subject_id
        ready, _ = ray.wait(list(in_flight), num_returns=1)
        subject_id = in_flight.pop(ready[0])
        results.append(finish(_result(ready[0], subject_id)))
    return sorted(results, key=lambda r: r["subject_id"])


@contextlib.contextmanager
def runtime(address: str | None = None, num_cpus: int = 1, object_store_memory: int | None = None):
    """Use the Ray runtime of this process if there is one; else join ``address``, or start a local one and stop it.

    A local runtime has ``num_cpus`` CPUs, no dashboard, and this checkout on its workers' ``PYTHONPATH``.
    """
    import ray

    if ray.is_initialized():
        yield
        return
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
    else:
        start_local(num_cpus, object_store_memory)
    try:
        yield
    finally:
        ray.shutdown()


def start_local(num_cpus: int, object_store_memory: int | None = None) -> None:
    """``ray.init`` of a local runtime with ``num_cpus`` CPUs whose workers import this checkout of the package."""
    import ray

    path = os.pathsep.join(p for p in (PACKAGE_ROOT, os.environ.get("PYTHONPATH")) if p)
    ray.init(
        num_cpus=num_cpus, object_store_memory=object_store_memory, include_dashboard=False,
        logging_level=logging.WARNING, runtime_env={"env_vars": {"PYTHONPATH": path}},
    )  # fmt: skip


def _render_placement(device: str, resources: dict) -> tuple[str, dict]:
    """(torch device of the render tasks, their Ray resources): a GPU share each when there are GPUs, else a CPU."""
    gpus = resources.get("GPU", 0)
    if device == "cuda" and not gpus:
        raise ValueError("--device cuda, but the Ray cluster has no GPU (use --device auto or cpu)")
    if gpus and device in ("auto", "cuda"):
        return "cuda", {"num_cpus": 1, "num_gpus": 1 / RENDERS_PER_GPU}
    return ("cpu" if device == "auto" else device), {"num_cpus": 1}


def _read(subject: Subject):
    """Read stage task: (status, ``CTVolume`` or None); status is ``{"status": "read", "read_s": ...}`` or a failure."""
    try:
        ct, seconds = read_stage(subject)
    except Exception as err:  # noqa: BLE001 - one subject's unexpected error must not stop the build
        return failure(subject.subject_id, err), None
    return {"status": "read", "read_s": seconds}, ct


def _render(subject_id: str, status: dict, ct, config, device: str) -> dict:
    """Render stage task: the subject's result (a read failure passes through)."""
    if status["status"] != "read":
        return status
    try:
        return {**render_stage(subject_id, ct, config, device), "read_s": status["read_s"]}
    except Exception as err:  # noqa: BLE001 - one subject's unexpected error must not stop the build
        return failure(subject_id, err)


def _result(ref, subject_id: str) -> dict:
    """The result behind a render task's ``ref``; a task that died in both attempts becomes a failure."""
    import ray

    try:
        return ray.get(ref)
    except ray.exceptions.WorkerCrashedError:
        return {"subject_id": subject_id, "status": "failed", "reason": WORKER_DIED}
    except ray.exceptions.RayError as err:  # a lost node or object, the memory monitor, ...
        reason = f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0]}"
        return {"subject_id": subject_id, "status": "failed", "reason": reason}
