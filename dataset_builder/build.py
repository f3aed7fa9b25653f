"""Build a corpus: subjects -> rendered views -> one Parquet shard per subject -> dataset card.

    python -m dataset_builder build --source embedded --output_dir outputs/drr
    python -m dataset_builder build --source phantom --size_px 128 --num_subjects 4 --output_dir /tmp/drr
    python -m dataset_builder build --source totalsegmentator --root Totalsegmentator_dataset_v201 \
        --output_dir outputs/drr_ts --num_proc 2 --shard 0/8
    python -m dataset_builder build --source pairs --pairs_csv ct_rate_pairs.csv --label_names v2 \
        --output_dir outputs/ct_rate
    python -m dataset_builder card --output_dir outputs/drr_ts      # re-render the card once all shards are in

A subject that cannot be used (unreadable or truncated file, label map that does not match the CT, no lungs,
tiny field of view, non-finite voxels, a view that renders constant or with implausible lungs, a worker process
killed twice, ...) is skipped with a one-line reason in ``failures.jsonl``; the rest of the build completes.
A build that cannot start (bad flags, a missing ``--root``, a folder built with other settings or in use by another
build) raises ``BuildError`` or ``CTInputError`` before anything is written.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from multiprocessing import get_context
from pathlib import Path

import torch
from filelock import FileLock, Timeout
from tqdm.auto import tqdm

from chexanatomy.codec import codec_fingerprint, default_tokenizer, load_codec
from chexanatomy.locate import resolve_device
from chexanatomy.mask_tokens import MaskTokenizer

from .card import write_card
from .checks import check_views
from .corpus import (
    SPLITS,
    shard_path,
    split_of,
    target_of_temporary,
    to_row,
    write_shard,
    write_text_atomically,
)
from .ct import CTInputError
from .geometry import VIEWS
from .render import FRAMINGS, RenderSettings, render_subject
from .sources import PROVENANCE, Subject, pair_subjects, pseudo_subjects, shard_subjects, totalsegmentator_subjects

SOURCES = tuple(PROVENANCE)
# Fields that do not change the content of the shards; a resumed or sharded build may change them.
_NON_CONTENT = {"output_dir", "push_to_hub", "private", "device", "num_proc", "shard"}
WORKER_DIED = "its worker process died in both attempts (killed by a signal, e.g. the out-of-memory killer)"


class BuildError(ValueError):
    """A build that cannot start as asked (folder in use, built with other settings, damaged configuration)."""


@dataclass
class BuildConfig:
    """Configuration of ``python -m dataset_builder build`` (every field is a ``--flag``)."""

    source: str = field(default="embedded", metadata={"help": f"Where the CTs come from: one of {SOURCES}."})
    output_dir: str = field(default="outputs/drr", metadata={"help": "Corpus folder (created; resumable)."})
    root: str | None = field(
        default=None, metadata={"help": "totalsegmentator: the dataset folder (one folder per CT)."}
    )
    ct: str | None = field(default=None, metadata={"help": "pairs: a CT (NIfTI file or DICOM series folder)."})
    labels: str | None = field(default=None, metadata={"help": "pairs: its multilabel map (NIfTI)."})
    label_names: str = field(default="v2", metadata={"help": "pairs: label ids: v1, v2 or a CSV/JSON id -> name file."})
    pairs_csv: str | None = field(
        default=None, metadata={"help": "pairs: CSV with subject_id, ct, labels[, label_names, split]."}
    )
    num_subjects: int = field(
        default=10, metadata={"help": "embedded/phantom: pseudo-subjects (deformed copies) to make."}
    )
    deformation_strength: float = field(default=1.0, metadata={"help": "Scale of the pseudo-subject warps; 0 = none."})
    views: list[str] = field(default_factory=lambda: ["PA", "LAT"], metadata={"help": f"Views among {VIEWS}."})
    poses_per_view: int = field(default=3, metadata={"help": "Poses per view; pose 0 is the standard position."})
    size_px: int = field(default=512, metadata={"help": "Image height = width in pixels (224-1024; 32+ for tests)."})
    mask_threshold_mm: float = field(default=1.5, metadata={"help": "Path length (mm) a ray needs to be in a mask."})
    min_area_px: int = field(default=8, metadata={"help": "Omit structures smaller than this in a view."})
    randomize: bool = field(default=True, metadata={"help": "Random poses (beyond pose 0) and appearance."})
    seed: int = field(default=0, metadata={"help": "Base seed of every random draw."})
    virtual_non_contrast: bool = field(
        default=True, metadata={"help": "Set an enhanced CT's blood pool (judged from its labels) to unenhanced blood."}
    )
    extend_body: bool = field(
        default=True, metadata={"help": "Continue the body beyond the CT (neck, abdomen, cut arms): no CT box edges."}
    )
    framing: str = field(
        default="radiograph",
        metadata={"help": f"{FRAMINGS}: fit the field to the lungs as a radiographer does, or a fixed 430 mm field."},
    )
    physics: bool = field(
        default=True, metadata={"help": "Beam hardening, scatter, detector blur (MTF) and quantum noise."}
    )
    processing: float = field(
        default=1.0, metadata={"help": "Strength in [0, 1] of clinical processing, collimation and markers."}
    )
    split_fractions: list[float] = field(
        default_factory=lambda: [0.8, 0.1, 0.1], metadata={"help": "train/validation/test."}
    )
    codec: str = field(
        default="default", metadata={"help": "Mask codec for text targets: default, a folder, a Hub id, none."}
    )
    num_proc: int = field(default=1, metadata={"help": "Worker processes (one CT in memory each)."})
    shard: str = field(default="0/1", metadata={"help": "i/N: build only part i of N (for N machines)."})
    device: str = field(default="auto", metadata={"help": "torch device for projection: auto, cpu, cuda."})
    push_to_hub: str | None = field(
        default=None, metadata={"help": "Hub dataset repo to upload to, e.g. chexanatomy/drr."}
    )
    private: bool = field(default=False, metadata={"help": "Create the Hub repo as private."})

    def __post_init__(self):
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {self.source!r}")
        if self.source == "totalsegmentator" and not self.root:
            raise ValueError("source totalsegmentator needs --root (the dataset folder)")
        if self.source == "pairs" and not (self.pairs_csv or (self.ct and self.labels)):
            raise ValueError("source pairs needs --ct and --labels, or --pairs_csv")
        if bad := [v for v in self.views if v not in VIEWS]:
            raise ValueError(f"views: unknown {bad}; choose among {VIEWS}")
        if not 32 <= self.size_px <= 1024:
            raise ValueError(f"size_px must be in 32..1024, got {self.size_px}")
        if self.num_subjects < 1 or self.poses_per_view < 1 or self.num_proc < 1:
            raise ValueError("num_subjects, poses_per_view and num_proc must be at least 1")
        if self.mask_threshold_mm <= 0:
            raise ValueError(f"mask_threshold_mm must be positive, got {self.mask_threshold_mm}")
        self.shard_index()  # validates --shard
        self.render_settings()  # validates --framing and --processing
        split_of("check", tuple(self.split_fractions))  # validates the fractions

    def shard_index(self) -> tuple[int, int]:
        """``--shard i/N`` parsed to ``(i, N)`` with ``0 <= i < N``; raises ``ValueError`` if malformed."""
        try:
            index, count = (int(v) for v in self.shard.split("/"))
        except ValueError:
            raise ValueError(f"shard must look like i/N (e.g. 0/8), got {self.shard!r}") from None
        if not 0 <= index < count:
            raise ValueError(f"shard {self.shard}: need 0 <= i < N")
        return index, count

    def render_settings(self) -> RenderSettings:
        """The rendering part of this config (size, views, poses, mask threshold, ...) as ``RenderSettings``."""
        return RenderSettings(
            self.size_px, tuple(self.views), self.poses_per_view, self.mask_threshold_mm, self.min_area_px,
            self.randomize, seed=self.seed, virtual_non_contrast=self.virtual_non_contrast,
            extend_body=self.extend_body, framing=self.framing, physics=self.physics, processing=self.processing,
        )  # fmt: skip

    def content_dict(self, tokenizer: MaskTokenizer | None = None) -> dict:
        """Everything that determines the shards' content (resume refuses to mix two of these)."""
        out = {k: v for k, v in asdict(self).items() if k not in _NON_CONTENT}
        if tokenizer is not None:
            out["mask_tokens"] = {**tokenizer.settings(), "codec_fingerprint": codec_fingerprint(tokenizer.codec)}
        return out

    def subjects(self) -> list[Subject]:
        """This shard's subjects of the configured source; raises ``ValueError`` if subject ids are empty or repeat."""
        if self.source in ("embedded", "phantom"):
            subjects = pseudo_subjects(self.source, self.num_subjects, self.seed, self.deformation_strength)
        elif self.source == "totalsegmentator":
            subjects = totalsegmentator_subjects(self.root)
        else:
            subjects = pair_subjects(self.ct, self.labels, self.label_names, self.pairs_csv)
        ids = [s.subject_id for s in subjects]
        if not all(i.strip() for i in ids):
            raise ValueError(f"{self.source}: a subject id is empty; every subject needs one")
        if len(set(ids)) != len(ids):
            duplicates = sorted({i for i in ids if ids.count(i) > 1})
            raise ValueError(f"subject ids are not unique in {self.source}: {duplicates}")
        return shard_subjects(subjects, *self.shard_index())


@lru_cache(maxsize=2)
def _tokenizer(codec: str) -> MaskTokenizer | None:
    """One tokenizer per process and codec (workers load their own)."""
    loaded = load_codec(codec)
    return None if loaded is None else default_tokenizer(loaded)


def subject_split(subject: Subject, config: BuildConfig) -> str:
    """The subject's own split if it has one (``CTInputError`` if unknown), else a hash of its id by the fractions."""
    if subject.split is not None:
        if subject.split not in SPLITS:
            raise CTInputError(f"{subject.subject_id}: split {subject.split!r} is not one of {SPLITS}")
        return subject.split
    return split_of(subject.subject_id, tuple(config.split_fractions))


def build_subject(subject: Subject, config: BuildConfig) -> dict:
    """Render and write one subject's shard; never raises for bad input (returns status ``failed``)."""
    out = {"subject_id": subject.subject_id}
    try:
        path = shard_path(Path(config.output_dir), subject_split(subject, config), subject.subject_id)
        if path.exists():
            return {**out, "status": "skipped"}
        t0 = time.perf_counter()
        ct = subject.load()
        t1 = time.perf_counter()
        views = render_subject(ct, config.render_settings(), resolve_device(config.device))
        check_views(views)
        rows = [
            to_row(v, subject.subject_id, ct.source, config.mask_threshold_mm, _tokenizer(config.codec)) for v in views
        ]
        t2 = time.perf_counter()
        write_shard(rows, path)
        t3 = time.perf_counter()
    except CTInputError as err:
        return {**out, "status": "failed", "reason": str(err)}
    except Exception as err:  # noqa: BLE001 - one subject's unexpected error must not stop the build
        return {**out, "status": "failed", "reason": f"{type(err).__name__}: {err}"}
    return {**out, "status": "built", "images": len(views), "read_s": t1 - t0, "render_s": t2 - t1, "write_s": t3 - t2}


_STARTED = None  # in a worker process: the queue on which it announces each subject it starts


def _init_worker(threads: int, started) -> None:
    global _STARTED
    torch.set_num_threads(threads)
    _STARTED = started


def _build_in_worker(subject: Subject, config: BuildConfig) -> dict:
    """``build_subject`` in a worker, announced first, so that a worker's death can be traced to its subject."""
    _STARTED.put(subject.subject_id)
    return build_subject(subject, config)


def _run(subjects: list[Subject], config: BuildConfig) -> list[dict]:
    """One result per subject (sorted by id), in this process or in ``num_proc`` workers."""
    bar = tqdm(total=len(subjects), desc="subjects", unit="CT")
    if config.num_proc == 1:
        results = []
        for subject in subjects:
            results.append(build_subject(subject, config))
            bar.update()
        return results
    return sorted(_run_in_workers(subjects, config, bar), key=lambda r: r["subject_id"])


def _run_in_workers(subjects: list[Subject], config: BuildConfig, bar: tqdm) -> list[dict]:
    """Results of ``subjects`` built by ``num_proc`` workers, surviving workers that die (e.g. out of memory).

    When a worker dies, the pool is replaced: subjects that had not started go on in the new pool; those that were
    running are suspects, retried once each alone in a pool of one, so a subject that kills its worker again is
    recorded as failed (``WORKER_DIED``) and named, while the others complete.
    """
    results, suspects, pending = [], [], list(subjects)
    while pending:
        done, crashed, started = _run_pool(pending, config, config.num_proc)
        results += done
        running = [s for s in crashed if s.subject_id in started]
        suspects += running or crashed  # nothing announced: every unfinished subject is a suspect
        pending = [s for s in crashed if s not in suspects]
        bar.update(len(done))
    for subject in suspects:
        done, _, _ = _run_pool([subject], config, 1)
        results += done or [{"subject_id": subject.subject_id, "status": "failed", "reason": WORKER_DIED}]
        bar.update()
    return results


def _run_pool(subjects: list[Subject], config: BuildConfig, workers: int) -> tuple[list[dict], list[Subject], set]:
    """(results, subjects left unfinished because a worker died, ids of the subjects that workers started)."""
    ctx = get_context("fork")  # workers inherit the loaded modules; each still reads its own CT
    started = ctx.SimpleQueue()
    threads = max(1, (os.cpu_count() or 1) // config.num_proc)
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(threads, started))
    futures = {pool.submit(_build_in_worker, s, config): s for s in subjects}
    done, crashed, announced = [], [], set()
    try:
        for future in as_completed(futures):
            announced |= _drain(started)  # as it goes: a full pipe would block the workers
            try:
                done.append(future.result())
            except BrokenProcessPool:
                crashed.append(futures[future])
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return done, sorted(crashed, key=lambda s: s.subject_id), announced | _drain(started)


def _drain(queue) -> set:
    """Everything waiting in a ``SimpleQueue``, without blocking."""
    items = set()
    while not queue.empty():
        items.add(queue.get())
    return items


@contextlib.contextmanager
def _folder_lock(root: Path, config: BuildConfig):
    """Hold this build's lock on ``root`` (one per ``--shard`` part); ``BuildError`` when another build holds it."""
    index, count = config.shard_index()
    lock = FileLock(root / (".build.lock" if count == 1 else f".build-{index}-of-{count}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        part = "" if count == 1 else f" (shard {index}/{count})"
        raise BuildError(
            f"another build is writing {root}{part} (lock {lock.lock_file}); wait for it to finish or use another "
            "--output_dir"
        ) from None
    try:
        yield
    finally:
        lock.release()


def read_build_config(root: Path) -> dict:
    """The saved ``build_config.json`` of a corpus folder; ``BuildError`` when it is missing, empty or damaged."""
    saved = Path(root) / "build_config.json"
    try:
        content = json.loads(saved.read_text())
    except FileNotFoundError:
        raise BuildError(f"{saved} does not exist: {root} is not a corpus folder") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BuildError(
            f"{saved} is empty or damaged ({err}); restore it, or delete it to adopt this command's settings "
            "(the shards already in the folder must match them)"
        ) from None
    if not isinstance(content, dict):
        raise BuildError(f"{saved} is damaged (not a JSON object); restore or delete it")
    return content


def _check_resume(root: Path, content: dict) -> None:
    """Record ``content`` in ``root/build_config.json`` (atomically), or refuse a folder built with other settings.

    The comparison and the write hold ``.build_config.lock``, so concurrent builds (shards) agree on one config.

    Raises:
        BuildError: the folder holds a corpus built with other content settings, or a damaged configuration.
    """
    saved = root / "build_config.json"
    with FileLock(root / ".build_config.lock", timeout=60):
        _remove_temporaries(root, {saved.name})
        if saved.exists():
            previous = {k: v for k, v in read_build_config(root).items() if k not in _NON_CONTENT}
            if previous != content:
                changed = sorted(k for k in {*content, *previous} if previous.get(k) != content.get(k))
                raise BuildError(
                    f"{root} holds a corpus built with different settings ({', '.join(changed)}); "
                    "use a new --output_dir or delete the folder."
                )
        write_text_atomically(saved, json.dumps(content, indent=2, sort_keys=True) + "\n")


def _remove_temporaries(folder: Path, names: set[str]) -> None:
    """Delete the temporary files (``.NAME.tmp-PID``, left by killed writers) of the files ``names`` in ``folder``."""
    if folder.is_dir():
        for path in folder.iterdir():
            if target_of_temporary(path.name) in names:
                path.unlink(missing_ok=True)


def _sweep_temporaries(root: Path, subjects: list[Subject], config: BuildConfig) -> None:
    """Delete what killed runs of this build left: temporaries of its subjects' shards and of its failure log.

    Only this build's own files: another ``--shard`` part, perhaps running now, writes other names.
    """
    shards = {shard_path(root, split, s.subject_id).name for s in subjects for split in SPLITS}
    _remove_temporaries(root / "data", shards)
    _remove_temporaries(root, {failures_path(root, config).name})


def failures_path(root: Path, config: BuildConfig) -> Path:
    """Failure log of this build in ``root``: ``failures.jsonl``, or ``failures-{i}-of-{N}.jsonl`` for a shard."""
    index, count = config.shard_index()
    return root / ("failures.jsonl" if count == 1 else f"failures-{index}-of-{count}.jsonl")


def _write_failures(path: Path, results: list[dict]) -> list[dict]:
    failed = [{"subject_id": r["subject_id"], "reason": r["reason"]} for r in results if r["status"] == "failed"]
    write_text_atomically(path, "".join(json.dumps(f) + "\n" for f in failed))
    return failed


def build(config: BuildConfig) -> dict:
    """Build (or resume) the corpus described by ``config``; returns a summary dict.

    Nothing is written before the codec is loaded and the subjects are listed. The folder is then locked for this
    build (``BuildError`` if another build of the same part holds it), its settings checked against
    ``build_config.json``, and temporaries left by killed runs of this build deleted. Every listed subject ends up
    built, skipped (already built) or failed: ``subjects == built + resumed_skipped + failed`` in the summary.

    Raises:
        BuildError, CTInputError, ValueError, OSError: the build cannot start (see the module docstring).
    """
    start = time.time()
    root = Path(config.output_dir)
    content = config.content_dict(_tokenizer(config.codec))
    subjects = config.subjects()
    root.mkdir(parents=True, exist_ok=True)
    with _folder_lock(root, config):
        _check_resume(root, content)
        _sweep_temporaries(root, subjects, config)
        results = _run(subjects, config)
        failed = _write_failures(failures_path(root, config), results)
        _sweep_temporaries(root, subjects, config)  # of workers killed in this run
        write_card(root, content, [PROVENANCE[config.source]], config.push_to_hub or "chexanatomy/drr")
    built = [r for r in results if r["status"] == "built"]
    summary = {
        "subjects": len(subjects),
        "built": len(built),
        "resumed_skipped": sum(r["status"] == "skipped" for r in results),
        "failed": len(failed),
        "images": sum(r["images"] for r in built),
        "seconds": round(time.time() - start, 1),
        **{k: round(sum(r[k] for r in built), 1) for k in ("read_s", "render_s", "write_s")},
        "failures": failed,
    }
    if config.push_to_hub and (summary["built"] or summary["resumed_skipped"]):
        from .hub import push_corpus

        summary["pushed"] = push_corpus(root, config.push_to_hub, config.private)
    return summary


def rewrite_card(output_dir: str) -> Path:
    """Re-render the card of a finished (e.g. multi-machine) build from its shards and build_config.json."""
    root = Path(output_dir)
    content = read_build_config(root)
    if content.get("source") not in PROVENANCE:
        raise BuildError(f"{root / 'build_config.json'} names no known source ({content.get('source')!r})")
    return write_card(root, content, [PROVENANCE[content["source"]]])
