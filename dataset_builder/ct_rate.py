r"""The pairs CSV of CT-RATE (chest CTs hosted as a Hugging Face dataset) from its metadata, for ``--source pairs``.

    python -m dataset_builder.ct_rate \\
        --metadata hf://datasets/ibrahimhamamci/CT-RATE/dataset/metadata/train_metadata.csv \\
        --volumes hf://datasets/ibrahimhamamci/CT-RATE/dataset/train_fixed \\
        --labels s3://my-bucket/ct-rate-totalseg/train --out ct_rate_train_pairs.csv

CT-RATE names a volume ``{set}_{patient}_{scan}_{reconstruction}.nii.gz`` (``train_1_a_1.nii.gz``) and stores it at
``{volumes}/{set}_{patient}/{set}_{patient}_{scan}/{name}``. The label maps are TotalSegmentator multilabel maps
(``TotalSegmentator -i CT -o LABELS.nii.gz --ml``: v2 ids, so ``--label_names v2``) that the user made, one per volume,
at ``{labels}/{name}`` (same file name as the CT). Every volume of one patient gets the patient's split, so no patient
is in two splits: CT-RATE's validation set (``valid_*``) is our ``test``; its training patients are split
train/validation by a hash of the patient id (``corpus.split_of`` with fractions 0.9/0.1/0). The ``--metadata`` may be
any fsspec URL or path (it is read through the input cache); the CSV holds URLs, read by the workers when they build.
"""

from __future__ import annotations

import argparse
import csv
import io
import re
import sys

from . import storage
from .corpus import split_of

VOLUME = re.compile(r"(?P<set>train|valid)_(?P<patient>\d+)_(?P<scan>[a-z]+)_(?P<recon>\d+)\.nii(\.gz)?")
TRAIN_FRACTIONS = (0.9, 0.1, 0.0)


def volume_path(name: str) -> str:
    """A volume's path below the volumes folder: ``train_1/train_1_a/train_1_a_1.nii.gz``; ``ValueError`` if odd."""
    m = VOLUME.fullmatch(name)
    if not m:
        raise ValueError(f"{name!r} is not a CT-RATE volume name (like train_1_a_1.nii.gz)")
    patient = f"{m['set']}_{m['patient']}"
    return f"{patient}/{patient}_{m['scan']}/{name}"


def patient_split(name: str) -> str:
    """``test`` for CT-RATE's validation patients, else train/validation by a hash of the patient id."""
    m = VOLUME.fullmatch(name)
    patient = f"{m['set']}_{m['patient']}"
    return "test" if m["set"] == "valid" else split_of(patient, TRAIN_FRACTIONS)


def pairs_rows(metadata_csv: str, volumes: str, labels: str) -> list[dict[str, str]]:
    """One pairs-CSV row per ``VolumeName`` of the metadata: subject_id, ct, labels, split."""
    reader = csv.DictReader(io.StringIO(storage.read_text(metadata_csv, encoding="utf-8-sig")))
    if "VolumeName" not in (reader.fieldnames or []):
        raise ValueError(f"{metadata_csv} has no VolumeName column (its columns: {reader.fieldnames})")
    rows = []
    for record in reader:
        name = record["VolumeName"].strip()
        rows.append({
            "subject_id": name.split(".")[0], "ct": storage.join(volumes, volume_path(name)),
            "labels": storage.join(labels, name), "split": patient_split(name),
        })  # fmt: skip
    return rows


def write_pairs_csv(rows: list[dict[str, str]], out) -> None:
    """Write ``rows`` as a pairs CSV (``subject_id, ct, labels, split``) to the open text file ``out``."""
    writer = csv.DictWriter(out, fieldnames=["subject_id", "ct", "labels", "split"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)


def main(argv: list[str] | None = None) -> int:
    """Write the pairs CSV; a bad metadata file or volume name is one line on stderr and exit status 2."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--metadata", required=True, help="CT-RATE's train_metadata.csv or validation_metadata.csv")
    ap.add_argument("--volumes", required=True, help="the folder holding {set}_{patient}/ folders")
    ap.add_argument("--labels", required=True, help="the folder of the TotalSegmentator --ml maps, one per volume")
    ap.add_argument("--out", required=True, help="the pairs CSV to write (local)")
    args = ap.parse_args(argv)
    try:
        rows = pairs_rows(args.metadata, args.volumes, args.labels)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    with open(args.out, "w", newline="", encoding="utf-8") as fh:
        write_pairs_csv(rows, fh)
    counts = {s: sum(r["split"] == s for r in rows) for s in ("train", "validation", "test")}
    print(f"wrote {args.out}: {len(rows)} volumes ({', '.join(f'{k} {v}' for k, v in counts.items())})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
