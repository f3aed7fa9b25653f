"""The local engine: both stages of each subject in this process, or in ``--num_proc`` forked worker processes.

``run(subjects, config, finish)`` calls ``finish(result)`` in this process for every subject as it completes
(``stages.build_subject``'s result; ``finish`` writes the shard) and returns what ``finish`` returned, sorted by
subject id. A worker that dies (killed by a signal, e.g. the out-of-memory killer) is survived: see
``_run_in_workers``. A worker never survives the main process: killed (``kill -9``), it takes its workers with it
(``_die_with_parent``), and the next run resumes.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context

import torch

from .sources import Subject
from .stages import build_subject

WORKER_DIED = "its worker process died in both attempts (killed by a signal, e.g. the out-of-memory killer)"


def run(subjects: list[Subject], config, finish: Callable[[dict], dict]) -> list[dict]:
    """``finish(build_subject(s))`` of every subject, in this process or in ``config.num_proc`` workers."""
    if config.num_proc == 1:
        return [finish(build_subject(subject, config)) for subject in subjects]
    return sorted(_run_in_workers(subjects, config, finish), key=lambda r: r["subject_id"])


_STARTED = None  # in a worker process: the queue on which it announces each subject it starts


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _init_worker(threads: int, started, parent: int) -> None:
    global _STARTED
    _die_with_parent(parent)
    torch.set_num_threads(threads)
    _STARTED = started


def _die_with_parent(parent: int) -> None:
    """End this worker when the process ``parent`` that forked it dies, however it dies (even ``kill -9``).

    Otherwise a worker whose parent is killed waits forever on the task pipe, holding its CT in memory. Linux sends
    the worker SIGKILL when its parent dies (``prctl(PR_SET_PDEATHSIG)``): nothing of the worker's is lost, since
    shards are written by the parent. A parent that died before the call is seen from ``getppid`` changing.
    Elsewhere (macOS) nothing is set.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            return  # not allowed here: a worker without the guard is what we had before
    if os.getppid() != parent:
        os._exit(1)


def _build_in_worker(subject: Subject, config) -> dict:
    """``build_subject`` in a worker, announced first, so that a worker's death can be traced to its subject."""
    _STARTED.put(subject.subject_id)
    return build_subject(subject, config)


def _run_in_workers(subjects: list[Subject], config, finish: Callable[[dict], dict]) -> list[dict]:
    """Results of ``subjects`` built by ``num_proc`` workers, surviving workers that die (e.g. out of memory).

    When a worker dies, the pool is replaced: subjects that had not started go on in the new pool; those that were
    running are suspects, retried once each alone in a pool of one, so a subject that kills its worker again is
    recorded as failed (``WORKER_DIED``) and named, while the others complete.
    """
    results, suspects, pending = [], [], list(subjects)
    while pending:
        done, crashed, started = _run_pool(pending, config, config.num_proc, finish)
        results += done
        running = [s for s in crashed if s.subject_id in started]
        suspects += running or crashed  # nothing announced: every unfinished subject is a suspect
        pending = [s for s in crashed if s not in suspects]
    for subject in suspects:
        done, _, _ = _run_pool([subject], config, 1, finish)
        results += done or [finish({"subject_id": subject.subject_id, "status": "failed", "reason": WORKER_DIED})]
    return results


def _run_pool(subjects: list[Subject], config, workers: int, finish) -> tuple[list[dict], list[Subject], set]:
    """(finished results, subjects left unfinished because a worker died, ids of the subjects workers started)."""
    ctx = get_context("fork")  # workers inherit the loaded modules; each still reads its own CT
    started = ctx.SimpleQueue()
    threads = max(1, (os.cpu_count() or 1) // config.num_proc)
    init = (threads, started, os.getpid())
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=init)
    futures = {pool.submit(_build_in_worker, s, config): s for s in subjects}
    done, crashed, announced = [], [], set()
    try:
        for future in as_completed(futures):
            announced |= _drain(started)  # as it goes: a full pipe would block the workers
            try:
                result = future.result()
            except BrokenProcessPool:
                crashed.append(futures[future])
                continue
            done.append(finish(result))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return done, sorted(crashed, key=lambda s: s.subject_id), announced | _drain(started)


def _drain(queue) -> set:
    """Everything waiting in a ``SimpleQueue``, without blocking."""
    items = set()
    while not queue.empty():
        items.add(queue.get())
    return items
