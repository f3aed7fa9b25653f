"""Build a corpus: subjects -> rendered views -> one Parquet shard per subject -> dataset card.

The path from the command line to a Parquet row, one stage per module, read top to bottom:
``__main__`` (flags) -> ``config.BuildConfig`` (checked, no I/O) -> ``sources.list_subjects`` (listing) -> this
module (folder lock, resume, which subjects are left) -> an engine (``local_engine`` or ``ray_engine``) running
``stages.read_stage`` and ``stages.render_stage`` (``corpus.to_row``, ``corpus.shard_bytes``) -> ``storage.Folder``
(atomic shard writes) -> ``card.write_card`` and ``hub`` (publishing).

    python -m dataset_builder build --source embedded --output_dir outputs/drr
    python -m dataset_builder build --source phantom --size_px 128 --num_subjects 4 --output_dir /tmp/drr
    python -m dataset_builder build --source totalsegmentator --root Totalsegmentator_dataset_v201 \
        --output_dir outputs/drr_ts --num_proc 2 --shard 0/8
    python -m dataset_builder build --source pairs --pairs_csv hf://datasets/me/ct-rate-ts/pairs.csv \
        --output_dir s3://bucket/drr_ct_rate --engine ray --ray_address auto
    python -m dataset_builder card --output_dir outputs/drr_ts      # re-render the card once all shards are in

A subject that cannot be used (unreadable or truncated file, label map that does not match the CT, no lungs,
tiny field of view, non-finite voxels, a view that renders constant or with implausible lungs, a worker process
killed twice, ...) is skipped with a one-line reason in ``failures.jsonl``; the rest of the build completes.
A build that cannot start (bad flags, a missing ``--root``, a folder built with other settings or in use by another
build) raises ``BuildError`` or ``CTInputError`` before anything is written.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import re
import time

from filelock import FileLock, Timeout
from tqdm.auto import tqdm

from . import local_engine
from .card import write_card
from .config import NON_CONTENT, BuildConfig
from .corpus import FORMAT_VERSION, SPLITS, existing_shards, shard_file, subject_split
from .ct import CTInputError
from .sources import PROVENANCE, Subject, list_subjects
from .stages import failure, resolve_device, tokenizer_for
from .storage import Folder

__all__ = ["BuildConfig", "BuildError", "build", "read_build_config", "resolve_device", "rewrite_card"]
STAGE_TIMES = ("read_s", "render_s", "write_s")


class BuildError(ValueError):
    """A build that cannot start as asked (folder in use, built with other settings, damaged configuration)."""


PART_LOCK = re.compile(r"\.build(?:-(\d+)-of-(\d+))?\.lock")  # .build.lock is part 0 of 1


@contextlib.contextmanager
def _folder_lock(folder: Folder, config: BuildConfig):
    """Hold this build's lock on a local folder (one per ``--shard`` part); ``BuildError`` when another build holds it.

    Parts of one ``N`` are disjoint and may be built at once; parts of different ``N`` overlap (``0/1`` is all of
    ``0/2``), so a build also refuses while a build of another ``N`` holds its part's lock. Taking the lock and
    looking at the others happen under ``.build-register.lock``, so two builds starting together see each other.
    A remote folder has no lock: object stores offer none, so two builds of one part there must be avoided by hand.
    """
    if folder.local is None:
        yield
        return
    index, count = config.shard_index()
    lock = FileLock(folder.local / (".build.lock" if count == 1 else f".build-{index}-of-{count}.lock"))
    with FileLock(folder.local / ".build-register.lock", timeout=60):
        try:
            lock.acquire(timeout=0)
        except Timeout:
            _refuse(folder, lock.lock_file, index, count)
        if other := _other_layout_running(folder, count):
            lock.release()
            _refuse(folder, other, index, count)
    try:
        yield
    finally:
        lock.release()


def _other_layout_running(folder: Folder, count: int) -> str | None:
    """The lock file of a running build of a ``--shard i/M`` part with ``M != count`` in ``folder``, or None."""
    for path in sorted(folder.local.glob(".build*.lock")):
        if not (match := PART_LOCK.fullmatch(path.name)) or int(match.group(2) or 1) == count:
            continue
        probe = FileLock(path)
        try:
            probe.acquire(timeout=0)
        except Timeout:
            return str(path)
        probe.release()  # free: that build has ended
    return None


def _refuse(folder: Folder, lock_file: str, index: int, count: int):
    """Raise the ``BuildError`` of a folder (part) another build is writing."""
    part = "" if count == 1 else f" (shard {index}/{count})"
    raise BuildError(
        f"another build is writing {folder}{part} (lock {lock_file}); wait for it to finish or use another "
        "--output_dir"
    ) from None


def read_build_config(root: str | Folder) -> dict:
    """The saved ``build_config.json`` of a corpus folder; ``BuildError`` when it is missing, empty or damaged."""
    folder = root if isinstance(root, Folder) else Folder(root)
    saved = folder.url_of("build_config.json")
    try:
        content = json.loads(folder.read_text("build_config.json"))
    except FileNotFoundError:
        raise BuildError(f"{saved} does not exist: {folder} is not a corpus folder") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BuildError(
            f"{saved} is empty or damaged ({err}); restore it, or delete it to adopt this command's settings "
            "(the shards already in the folder must match them)"
        ) from None
    if not isinstance(content, dict):
        raise BuildError(f"{saved} is damaged (not a JSON object); restore or delete it")
    return content


def record_config(folder: Folder, content: dict) -> None:
    """Record ``content`` in ``build_config.json`` (its one writer), or refuse a folder built with other settings.

    Locally, the comparison and the write hold ``.build_config.lock``, so concurrent builds (shards) agree on one.

    Raises:
        BuildError: the folder holds a corpus built with other content settings, or a damaged configuration.
    """
    lock = FileLock(folder.local / ".build_config.lock", timeout=60) if folder.local else contextlib.nullcontext()
    with lock:
        folder.remove_temporaries("", {"build_config.json"})
        if folder.exists("build_config.json"):
            previous = {k: v for k, v in read_build_config(folder).items() if k not in NON_CONTENT}
            if previous != content:
                changed = sorted(k for k in {*content, *previous} if previous.get(k) != content.get(k))
                raise BuildError(
                    f"{folder} holds a corpus built with different settings ({', '.join(changed)}); "
                    "use a new --output_dir or delete the folder."
                )
        folder.write("build_config.json", json.dumps(content, indent=2, sort_keys=True) + "\n")


def failures_file(config: BuildConfig) -> str:
    """Failure log of this build: ``failures.jsonl``, or ``failures-{i}-of-{N}.jsonl`` for a ``--shard`` part."""
    index, count = config.shard_index()
    return "failures.jsonl" if count == 1 else f"failures-{index}-of-{count}.jsonl"


def _sweep_temporaries(folder: Folder, subjects: list[Subject], config: BuildConfig) -> None:
    """Delete what killed runs of this build left: temporaries of its subjects' shards and of its failure log.

    Only this build's own files: another ``--shard`` part, perhaps running now, writes other names.
    """
    shards = {shard_file(split, s.subject_id).split("/")[1] for s in subjects for split in SPLITS}
    folder.remove_temporaries("data", shards)
    folder.remove_temporaries("", {failures_file(config)})


def plan(subjects: list[Subject], config: BuildConfig, folder: Folder) -> tuple[dict[str, str], list[dict]]:
    """(subject id -> shard file, for the subjects left to build; results of the others: skipped or failed).

    One listing of ``data/`` tells which shards exist (one request on remote storage, not one per subject).
    """
    present = {f for files in existing_shards(folder).values() for f in files}
    todo, settled = {}, []
    for subject in subjects:
        try:
            split = subject_split(subject.subject_id, subject.split, config.split_fractions)
        except CTInputError as err:
            settled.append(failure(subject.subject_id, err))
            continue
        if (shard := shard_file(split, subject.subject_id)) in present:
            settled.append({"subject_id": subject.subject_id, "status": "skipped"})
        else:
            todo[subject.subject_id] = shard
    return todo, settled


@contextlib.contextmanager
def _engine(config: BuildConfig):
    """The engine module for ``--engine``, with its runtime up (Ray: joined or started, and stopped after)."""
    if config.engine == "local":
        yield local_engine
        return
    if importlib.util.find_spec("ray") is None:
        raise BuildError('--engine ray needs Ray: pip install "ray==2.60.0" (on every node of the cluster)')
    from . import ray_engine

    with ray_engine.runtime(config.ray_address, config.num_proc):
        yield ray_engine


def build(config: BuildConfig) -> dict:
    """Build (or resume) the corpus described by ``config``; returns a summary dict.

    Nothing is written before the codec is loaded and the subjects are listed. The folder is then locked for this
    build (``BuildError`` if another build of the same part holds it), its settings checked against
    ``build_config.json``, and temporaries left by killed runs of this build deleted. Every listed subject ends up
    built, skipped (already built) or failed: ``subjects == built + resumed_skipped + failed`` in the summary, which
    also gives each stage's total seconds (``read_s``, ``render_s``, ``write_s``) and ``cts_per_hour`` (wall and per
    stage).

    Raises:
        BuildError, CTInputError, ValueError, OSError: the build cannot start (see the module docstring).
    """
    start = time.time()
    folder = Folder(config.output_dir)
    if config.push_to_hub and folder.local is None:
        raise BuildError(f"--push_to_hub publishes a local --output_dir; {folder} is remote (build locally first)")
    content = {**config.content_dict(tokenizer_for(config.codec)), "format_version": FORMAT_VERSION}  # no mixing
    subjects = list_subjects(config)
    with _engine(config) as engine:
        folder.makedirs()
        with _folder_lock(folder, config):
            record_config(folder, content)
            _sweep_temporaries(folder, subjects, config)
            todo, settled = plan(subjects, config, folder)
            with _publishing(folder, config):
                results = settled + _run(engine, [s for s in subjects if s.subject_id in todo], todo, config, folder)
            results.sort(key=lambda r: r["subject_id"])
            failed = _write_failures(folder, config, results)
            _sweep_temporaries(folder, subjects, config)  # of workers killed in this run
            write_card(folder, content, [PROVENANCE[config.source]], config.hub_model_id or "chexanatomy/drr")
    summary = _summary(subjects, results, failed, time.time() - start)
    if config.push_to_hub and (summary["built"] or summary["resumed_skipped"]):
        from .hub import push_corpus

        summary["pushed"] = push_corpus(folder.local, config.hub_model_id, config.hub_private_repo, shards=False)
    return summary


def _run(engine, subjects: list[Subject], shards: dict[str, str], config: BuildConfig, folder: Folder) -> list[dict]:
    """Every subject's result from the engine, each built shard written into ``folder`` as it arrives."""
    bar = tqdm(total=len(subjects), desc="subjects", unit="CT")

    def finish(result: dict) -> dict:
        if result["status"] == "built":
            t0 = time.perf_counter()
            try:
                folder.write(shards[result["subject_id"]], result.pop("shard"))
            except OSError as err:  # a full disk: this subject fails, named; what finished is still recorded
                result = failure(result["subject_id"], err)
            result["write_s"] = time.perf_counter() - t0
        bar.update()
        return result

    try:
        return engine.run(subjects, config, finish)
    finally:
        bar.close()


@contextlib.contextmanager
def _publishing(folder: Folder, config: BuildConfig):
    """While the engine runs: upload finished shards to the Hub as they appear (``--push_to_hub``), else nothing."""
    if not config.push_to_hub:
        yield
        return
    from .hub import publishing

    with publishing(folder.local, config.hub_model_id, config.hub_private_repo):
        yield


def _write_failures(folder: Folder, config: BuildConfig, results: list[dict]) -> list[dict]:
    failed = [{"subject_id": r["subject_id"], "reason": r["reason"]} for r in results if r["status"] == "failed"]
    folder.write(failures_file(config), "".join(json.dumps(f) + "\n" for f in failed))
    return failed


def _summary(subjects: list[Subject], results: list[dict], failed: list[dict], seconds: float) -> dict:
    """Counts, total seconds per stage and CTs/hour: overall (wall) and per stage (one worker, stage time alone)."""
    built = [r for r in results if r["status"] == "built"]
    stage_s = {k: sum(r.get(k, 0.0) for r in built) for k in STAGE_TIMES}
    rates = {"wall": 3600 * len(built) / seconds if built else 0.0}
    rates |= {k[:-2]: 3600 * len(built) / v for k, v in stage_s.items() if built and v > 0}
    return {
        "subjects": len(subjects),
        "built": len(built),
        "resumed_skipped": sum(r["status"] == "skipped" for r in results),
        "failed": len(failed),
        "images": sum(r["images"] for r in built),
        "seconds": round(seconds, 1),
        **{k: round(v, 1) for k, v in stage_s.items()},
        "cts_per_hour": {k: round(v, 1) for k, v in rates.items()},
        "failures": failed,
    }


def format_summary(summary: dict, output_dir: str) -> str:
    """The one-line summary the command prints (counts, seconds per stage, CTs/hour per stage)."""
    s = summary
    rates = ", ".join(f"{k} {v:.0f}" for k, v in s["cts_per_hour"].items())
    return (
        f"{s['subjects']} subjects: built {s['built']} ({s['images']} images), "
        f"skipped {s['resumed_skipped']} already built, "
        f"{s['failed']} failed, in {s['seconds']} s (read {s['read_s']} s, render {s['render_s']} s, "
        f"write {s['write_s']} s; CTs/hour: {rates}) -> {output_dir}"
        + (f"; pushed {s['pushed']}" if "pushed" in s else "")
    )


def rewrite_card(output_dir: str) -> str:
    """Re-render the card of a finished (e.g. multi-machine) build from its shards and build_config.json."""
    folder = Folder(output_dir)
    content = read_build_config(folder)
    if content.get("source") not in PROVENANCE:
        raise BuildError(f"{folder.url_of('build_config.json')} names no known source ({content.get('source')!r})")
    return write_card(folder, content, [PROVENANCE[content["source"]]])
