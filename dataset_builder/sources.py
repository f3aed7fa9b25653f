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


def totalsegmentator_subjects(root: str | Path) -> list[Subject]:
    """Every sub-folder of ``root`` (bad ones fail at load time, with a reason); splits from ``meta.csv``."""
    root = Path(root)
    if not root.is_dir():
        raise CTInputError(f"--root {root} is not a folder")
    splits = read_totalsegmentator_splits(root)
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    return [
        Subject(f.name, functools.partial(read_totalsegmentator_subject, f, f.name), splits.get(f.name))
        for f in folders
    ]


def pair_subjects(ct: str | None, labels: str | None, label_names: str, pairs_csv: str | None) -> list[Subject]:
    """Subjects of CT + label map pairs: one ``--ct``/``--labels`` pair, or every row of ``--pairs_csv``.

    The CSV has columns ``subject_id, ct, labels`` and optional ``label_names``, ``split``; relative paths are
    relative to the CSV. A single pair's subject id is the CT file name up to its first dot.
    """
    if pairs_csv is None:
        subject_id = Path(ct).name.split(".")[0]
        return [Subject(subject_id, functools.partial(read_pair, ct, labels, label_names, subject_id))]
    base = Path(pairs_csv).parent
    with open(pairs_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    missing = {"subject_id", "ct", "labels"} - set(rows[0] if rows else {})
    if missing:
        raise CTInputError(f"{pairs_csv} lacks the columns {sorted(missing)}")
    return [
        Subject(
            r["subject_id"],
            functools.partial(
                read_pair, base / r["ct"], base / r["labels"], r.get("label_names") or label_names, r["subject_id"]
            ),
            r.get("split") or None,
        )
        for r in rows
    ]


def shard_subjects(subjects: list[Subject], index: int, count: int) -> list[Subject]:
    """The disjoint part ``index`` of ``count`` (by a hash of the id, so it never depends on listing order)."""
    return [s for s in subjects if stable_seed("shard", s.subject_id) % count == index]
