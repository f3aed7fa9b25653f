"""Where subjects come from: pseudo-subjects of one CT, the TotalSegmentator layout, CT + label-map pairs.

Each source lists ``Subject`` records whose ``load`` is a ``functools.partial`` of a module-level reader, so a
subject can be sent to a worker process and nothing is read until a worker needs it (a resumed build never
touches finished subjects).
"""

from __future__ import annotations

import csv
import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .ct import (
    EMBEDDED_PROVENANCE,
    CTInputError,
    CTVolume,
    load_embedded,
    read_pair,
    read_totalsegmentator_splits,
    read_totalsegmentator_subject,
)
from .deform import deform
from .phantom import make_thorax_phantom
from .render import stable_seed

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


def totalsegmentator_subjects(root: str | Path) -> list[Subject]:
    """Every sub-folder of ``root`` (bad ones fail at load time, with a reason); splits from ``meta.csv``.

    A symbolic link that leads to no folder (dangling, or a loop) is a subject that fails, never a silent omission.
    """
    root = Path(root)
    if not root.is_dir():
        raise CTInputError(f"--root {root} is not a folder")
    splits = read_totalsegmentator_splits(root)
    subjects = []
    for entry in sorted(p for p in root.iterdir() if not p.name.startswith(".")):
        if entry.is_dir():
            load = functools.partial(read_totalsegmentator_subject, entry, entry.name)
        elif entry.is_symlink() and not entry.exists():
            reason = f"{entry.name}: a symbolic link that leads to no folder (dangling, or a loop)"
            load = functools.partial(refuse, reason)
        else:
            continue  # meta.csv, a licence, ...
        subjects.append(Subject(entry.name, load, splits.get(entry.name)))
    return subjects


def pair_subjects(ct: str | None, labels: str | None, label_names: str, pairs_csv: str | None) -> list[Subject]:
    """Subjects of CT + label map pairs: one ``--ct``/``--labels`` pair, or every row of ``--pairs_csv``.

    The CSV has columns ``subject_id, ct, labels`` and optional ``label_names``, ``split``; relative paths are
    relative to the CSV (a byte-order mark and spaces around the header are ignored). A single pair's subject id is
    the CT file name up to its first dot. A row without a ``ct`` or ``labels`` cell is a subject that fails.

    Raises:
        CTInputError: a CSV that is missing, unreadable or lacks a column, or a row with an empty ``subject_id``.
    """
    if pairs_csv is None:
        subject_id = Path(ct).name.split(".")[0]
        if not subject_id.strip():
            raise CTInputError(f"--ct {ct}: the subject id (the file name up to its first dot) is empty; rename it")
        return [Subject(subject_id, functools.partial(read_pair, ct, labels, label_names, subject_id))]
    rows = _read_pairs_csv(Path(pairs_csv))
    return [_pair_subject(row, number, Path(pairs_csv), label_names) for number, row in enumerate(rows, start=2)]


def _read_pairs_csv(path: Path) -> list[dict[str, str]]:
    """The rows of a pairs CSV as dicts with stripped header names; ``CTInputError`` when it cannot be used."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            reader.fieldnames = [name.strip() for name in reader.fieldnames or []]
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise CTInputError(f"cannot read --pairs_csv {path}: {err}") from err
    if missing := {"subject_id", "ct", "labels"} - set(reader.fieldnames):
        raise CTInputError(f"{path} lacks the columns {sorted(missing)} (its columns: {reader.fieldnames})")
    return rows


def _pair_subject(row: dict[str, str], number: int, csv_path: Path, label_names: str) -> Subject:
    """The subject of one pairs-CSV row (``number``: its line in the file); see ``pair_subjects``."""
    subject_id = row["subject_id"] or ""
    if not subject_id.strip():
        raise CTInputError(f"{csv_path} line {number}: empty subject_id; every row needs one")
    if empty := [c for c in ("ct", "labels") if not (row.get(c) or "").strip()]:
        load = functools.partial(refuse, f"{subject_id}: {csv_path} line {number} has no {' and no '.join(empty)}")
    else:
        base = csv_path.parent
        names = row.get("label_names") or label_names
        load = functools.partial(read_pair, base / row["ct"], base / row["labels"], names, subject_id)
    return Subject(subject_id, load, row.get("split") or None)


def shard_subjects(subjects: list[Subject], index: int, count: int) -> list[Subject]:
    """The disjoint part ``index`` of ``count`` (by a hash of the id, so it never depends on listing order)."""
    return [s for s in subjects if stable_seed("shard", s.subject_id) % count == index]
