"""Where subjects come from: pseudo-subjects of one CT, the TotalSegmentator layout, CT + label-map pairs.

The stage after the config (CLI -> config -> sources -> stages -> corpus rows -> folder): ``list_subjects`` does the
listing I/O (a folder, a CSV; local paths or fsspec URLs, see ``storage``). Each source lists ``Subject``
records whose ``load`` is a ``functools.partial`` of a module-level reader, so a
subject can be sent to a worker process and nothing is read until a worker needs it (a resumed build never
touches finished subjects). Remote files are fetched by the loader, in the worker, through the local cache.
"""

from __future__ import annotations

import csv
import functools
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from chexanatomy.anatomy import TOTALSEG_CLASS_MAPS
from chexanatomy.subjects import stable_seed

from . import storage
from .ct import (
    EMBEDDED_PROVENANCE,
    CTInputError,
    CTVolume,
    load_embedded,
    read_pair,
    read_totalsegmentator_splits,
    read_totalsegmentator_subject,
    resolve_label_names,
)
from .deform import deform
from .phantom import make_thorax_phantom

PROVENANCE = {
    "embedded": EMBEDDED_PROVENANCE,
    "phantom": "Procedural thorax phantom (dataset_builder/phantom.py): synthetic shapes, no patient data.",
    "totalsegmentator": "CTs and per-structure segmentations in the TotalSegmentator dataset layout "
    "(Wasserthal et al., 2023; CC BY 4.0 for the public dataset).",
    "pairs": "CT + TotalSegmentator multilabel map pairs supplied by the user "
    "(e.g. CT-RATE with TotalSegmentator --ml).",
}


@dataclass(frozen=True)
class Subject:
    """One subject of a build.

    Attributes:
        subject_id: unique, stable id (file names, splits).
        load: reads (or makes) the subject's ``CTVolume``; may raise ``CTInputError``.
        split: a split fixed by the collection's metadata, else None (then a hash of the id decides).
    """

    subject_id: str
    load: Callable[[], CTVolume]
    split: str | None = None


@functools.lru_cache(maxsize=1)
def _base_volume(source: str) -> CTVolume:
    return load_embedded() if source == "embedded" else make_thorax_phantom()


def load_pseudo_subject(source: str, subject_id: str, seed: int, strength: float) -> CTVolume:
    """The pseudo-subject ``subject_id`` of the embedded CT or the phantom (one base volume per process)."""
    return deform(_base_volume(source), stable_seed(seed, "deform", subject_id), subject_id, strength)[0]


def pseudo_subjects(source: str, count: int, seed: int, strength: float) -> list[Subject]:
    """``count`` lazily loaded pseudo-subjects ``{source}-ps000``, ... of ``source`` (embedded or phantom).

    Each is the base volume deformed with a seed derived from ``seed`` and its id, scaled by ``strength``.
    """
    ids = [f"{source}-ps{i:03d}" for i in range(count)]
    return [Subject(i, functools.partial(load_pseudo_subject, source, i, seed, strength)) for i in ids]


def refuse(reason: str) -> CTVolume:
    """The loader of a subject known to be unusable when listed: raises ``CTInputError(reason)``."""
    raise CTInputError(reason)


def totalsegmentator_subjects(root: str | Path, cache_dir: str | None = None) -> list[Subject]:
    """Every sub-folder of ``root`` (bad ones fail at load time, with a reason); splits from ``meta.csv``.

    ``root`` may be a local folder or an fsspec URL (subject folders are then fetched through the cache when loaded).
    A symbolic link that leads to no folder (dangling, or a loop) is a subject that fails, never a silent omission.
    """
    if not storage.isdir(root):
        raise CTInputError(f"--root {root} is not a folder")
    meta = storage.join(root, "meta.csv")
    splits = read_totalsegmentator_splits(storage.fetch(meta, cache_dir).parent) if storage.exists(meta) else {}
    subjects = []
    for name, kind in storage.listdir(root):
        if name.startswith("."):
            continue
        if kind == "directory":
            load = functools.partial(load_totalsegmentator_subject, storage.join(root, name), name, cache_dir)
        elif kind == "broken link":
            reason = f"{name}: a symbolic link that leads to no folder (dangling, or a loop)"
            load = functools.partial(refuse, reason)
        else:
            continue  # meta.csv, a licence, ...
        subjects.append(Subject(name, load, splits.get(name)))
    return subjects


def load_totalsegmentator_subject(folder: str, subject_id: str, cache_dir: str | None = None) -> CTVolume:
    """``read_totalsegmentator_subject`` of a local folder or of an fsspec URL's cached copy."""
    return read_totalsegmentator_subject(_fetch(folder, cache_dir), subject_id)


def load_pair(ct: str, labels: str, label_names: str, subject_id: str, cache_dir: str | None = None) -> CTVolume:
    """``read_pair`` of local paths or fsspec URLs (fetched through the cache); label names may be a URL too."""
    if label_names not in TOTALSEG_CLASS_MAPS:
        label_names = resolve_label_names(_fetch(label_names, cache_dir))
    return read_pair(_fetch(ct, cache_dir), _fetch(labels, cache_dir), label_names, subject_id)


def _fetch(url: str, cache_dir: str | None) -> Path:
    """``storage.fetch``, with a missing or unreachable file as ``CTInputError`` (the subject fails, named)."""
    try:
        return storage.fetch(url, cache_dir)
    except (OSError, ValueError) as err:
        raise CTInputError(f"cannot read {url}: {err}") from err


def pair_subjects(
    ct: str | None, labels: str | None, label_names: str, pairs_csv: str | None, cache_dir: str | None = None
) -> list[Subject]:
    """Subjects of CT + label map pairs: one ``--ct``/``--labels`` pair, or every row of ``--pairs_csv``.

    The CSV has columns ``subject_id, ct, labels`` and optional ``label_names``, ``split``; relative paths are
    relative to the CSV, and any cell may be an fsspec URL (a byte-order mark and spaces around the header are
    ignored). A single pair's subject id is the CT file name up to its first dot. A row without a ``ct`` or ``labels``
    cell is a subject that fails.

    Raises:
        CTInputError: a CSV that is missing, unreadable or lacks a column, or a row with an empty ``subject_id``.
    """
    if pairs_csv is None:
        subject_id = Path(ct).name.split(".")[0]
        if not subject_id.strip():
            raise CTInputError(f"--ct {ct}: the subject id (the file name up to its first dot) is empty; rename it")
        return [Subject(subject_id, functools.partial(load_pair, ct, labels, label_names, subject_id, cache_dir))]
    rows = _read_pairs_csv(pairs_csv, cache_dir)
    return [_pair_subject(row, number, pairs_csv, label_names, cache_dir) for number, row in enumerate(rows, start=2)]


def _read_pairs_csv(url: str, cache_dir: str | None) -> list[dict[str, str]]:
    """The rows of a pairs CSV as dicts with stripped header names; ``CTInputError`` when it cannot be used."""
    try:
        text = storage.read_text(url, cache_dir, encoding="utf-8-sig")
        reader = csv.DictReader(io.StringIO(text, newline=""))  # lines as csv reads them: a quoted line break stays
        reader.fieldnames = [name.strip() for name in reader.fieldnames or []]
        rows = list(reader)
    except (OSError, ValueError, UnicodeDecodeError, csv.Error) as err:
        raise CTInputError(f"cannot read --pairs_csv {url}: {err}") from err
    if missing := {"subject_id", "ct", "labels"} - set(reader.fieldnames):
        raise CTInputError(f"{url} lacks the columns {sorted(missing)} (its columns: {reader.fieldnames})")
    return rows


def _beside(csv_url: str, cell: str) -> str:
    """A CSV cell's path: a URL or absolute path as it is, a relative one relative to the CSV's folder."""
    if "://" in cell or Path(cell).is_absolute():
        return cell
    if storage.is_local(csv_url):
        return str(storage.local_path(csv_url).parent / cell)
    return storage.join(csv_url.rsplit("/", 1)[0], cell)


def _pair_subject(row: dict[str, str], number: int, csv_url: str, label_names: str, cache_dir: str | None) -> Subject:
    """The subject of one pairs-CSV row (``number``: its line in the file); see ``pair_subjects``."""
    subject_id = row["subject_id"] or ""
    if not subject_id.strip():
        raise CTInputError(f"{csv_url} line {number}: empty subject_id; every row needs one")
    if empty := [c for c in ("ct", "labels") if not (row.get(c) or "").strip()]:
        load = functools.partial(refuse, f"{subject_id}: {csv_url} line {number} has no {' and no '.join(empty)}")
    else:
        names = row.get("label_names") or label_names
        if names not in TOTALSEG_CLASS_MAPS:
            names = _beside(csv_url, names)
        ct, labels = _beside(csv_url, row["ct"]), _beside(csv_url, row["labels"])
        load = functools.partial(load_pair, ct, labels, names, subject_id, cache_dir)
    return Subject(subject_id, load, row.get("split") or None)


def list_subjects(config) -> list[Subject]:
    """The subjects of ``config``'s source and ``--shard`` part (a ``BuildConfig``); lists, reads nothing else.

    Raises:
        ValueError: a subject id is empty or repeats; ``CTInputError`` (a ``ValueError``): the listing failed.
    """
    if config.source in ("embedded", "phantom"):
        subjects = pseudo_subjects(config.source, config.num_subjects, config.seed, config.deformation_strength)
    elif config.source == "totalsegmentator":
        subjects = totalsegmentator_subjects(config.root, config.cache_dir)
    else:
        subjects = pair_subjects(config.ct, config.labels, config.label_names, config.pairs_csv, config.cache_dir)
    ids = [s.subject_id for s in subjects]
    if not all(i.strip() for i in ids):
        raise ValueError(f"{config.source}: a subject id is empty; every subject needs one")
    if len(set(ids)) != len(ids):
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"subject ids are not unique in {config.source}: {duplicates}")
    return shard_subjects(subjects, *config.shard_index())


def shard_subjects(subjects: list[Subject], index: int, count: int) -> list[Subject]:
    """The disjoint part ``index`` of ``count`` (by a hash of the id, so it never depends on listing order)."""
    return [s for s in subjects if stable_seed("shard", s.subject_id) % count == index]
