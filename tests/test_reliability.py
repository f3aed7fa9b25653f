"""Bad input never becomes training data, no subject is silently lost, no typo reaches the Hub (issue 14).

``CASES`` is the list of bad inputs tried, each with what must happen; every case is asserted by a test below, and
``README.md`` carries the same list as the table "bad input -> what happens" (``python tests/test_reliability.py``
prints it; ``test_readme_table_is_the_list_of_cases`` keeps the two equal).
"""

import dataclasses
import functools
import gzip
import json
import multiprocessing
import os
import signal
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--size_px", "48", "--poses_per_view", "1", "--views", "PA", "--codec", "none"]


@dataclass(frozen=True)
class Case:
    """One bad input: ``name`` (a subject id, or a test's key), the README's two columns, and what the test expects."""

    name: str
    bad_input: str
    outcome: str
    expect: str = ""  # a substring of the failure reason or the error message


FAILED = "the subject fails with its reason in `failures.jsonl`, no row is written; the rest is built"
USAGE = "exit status 2, one line `error: ...`, nothing written (the corrected command then works)"
# Subjects of one pairs CSV and one TotalSegmentator folder, built once (``corpus`` below).
SUBJECT_CASES = [
    Case("trunc", "truncated `.nii.gz`", FAILED, "truncated"),
    Case("text", "a text file named `ct.nii.gz`", FAILED, "cannot read CT"),
    Case("empty_file", "a 0-byte CT file", FAILED, "cannot read CT"),
    Case("missing_file", "a CT path that does not exist", FAILED, "cannot read CT"),
    Case("shape", "label map of another shape than the CT", FAILED, "shape"),
    Case("affine", "label map with another affine", FAILED, "affine"),
    Case("nolung", "label map without lung labels", FAILED, "no lung voxels"),
    Case("tiny", "field of view under 100 mm", FAILED, "field of view"),
    Case("fourd", "a 4-D CT", FAILED, "3-D"),
    Case("badsplit", "unknown `split` in the CSV", FAILED, "split"),
    Case("badnames", "`label_names` file that does not exist", FAILED, "label names"),
    Case("nan", "CT with a 10x10x10 block of NaN voxels", FAILED, "non-finite"),
    Case("inf", "CT with one infinite voxel", FAILED, "non-finite"),
    Case("voxel500", "1x1x1 CT of 500 mm voxels (passes the field-of-view check)", FAILED, "degenerate"),
    Case("nolabels", "CSV row without its `labels` cell", FAILED, "no labels"),
    Case("ts_noseg", "TotalSegmentator folder without `segmentations/`", FAILED, "segmentations"),
    Case("ts_segshape", "a segmentation file of another shape", FAILED, "shape"),
    Case("ts_loop", "a subject folder that is a symbolic link to itself", FAILED, "symbolic link"),
    Case("hu_air", "a CT of -1000 HU everywhere", FAILED, "no bone"),
    Case("hu_zero", "a CT of 0 HU everywhere", FAILED, "no air"),
    Case("hu_unit", "a CT normalised to [0, 1]", FAILED, "no air"),
    Case("hu_int8", "a CT stored as int8", FAILED, "no air"),
    Case("hu_shift", "a CT shifted by +1024 HU (stored without rescaling)", FAILED, "no air"),
    Case("hu_shift_padded", "the same with -2048 HU padding around the scanned circle", FAILED, "lungs average"),
    Case("hu_huge", "a CT with a block of 3e38 HU", FAILED, "outside"),
    Case("all_lung", "a label map where every voxel is lung", FAILED, "lung labels cover"),
    Case("lab_wrap", "an int32 label map holding 65546 (16-bit wrap: a lung id)", FAILED, "65546"),
    Case("lab_nan", "a float label map with NaN", FAILED, "non-finite"),
    Case("lab_unknown", "a label value outside the label table", FAILED, "250"),
    Case("header_bomb", "a 1 KB `.nii.gz` whose header claims 400^3 float32 voxels", FAILED, "header claims"),
]
SHARDS = "each subject its own shard (`x_1`, `x_1~<hash>`, ...)"
BUILT_CASES = [
    Case("x 1", "ids `x 1`, `x_1`, `x/1` (one file name before)", SHARDS),
    Case("日本", "two all-non-ASCII ids", SHARDS),
    Case("ts_good", "`meta.csv` with a byte-order mark", "its splits are honoured"),
    Case("csv_newline", "a quoted line break inside a CSV cell (`\"nl\\nid\"`)", "kept: the subject id is `nl\\nid`"),
]
USAGE_CASES = [
    Case("size_px", "`--size_px 5`", USAGE, "size_px must be in 32..1024"),
    Case("no_root", "a `--root` that does not exist", USAGE, "not a folder"),
    Case("no_csv", "a `--pairs_csv` that does not exist", USAGE, "cannot read --pairs_csv"),
    Case("empty_id", "CSV row with an empty `subject_id`", USAGE, "empty subject_id"),
    Case("duplicate_id", "two CSV rows with one `subject_id`", USAGE, "not unique"),
    Case("meta_column", "`meta.csv` with its `split` column renamed", USAGE, "lacks the column"),
    Case("settings", "resume with other settings", USAGE, "different settings"),
    Case("empty_config", "an emptied `build_config.json` (build and `card`)", USAGE, "empty or damaged"),
    Case("codec_typo", "`--codec outputs/codec-typo` (no Hub request)", USAGE, "no model folder"),
    Case("locked", "a second build into a folder being built", USAGE, "another build is writing"),
    Case("overlapping_shards", "overlapping `--shard` parts (`0/1` and `0/2`) built into one folder at once", USAGE,
         "another build is writing"),
    Case("no_s3fs", "`--output_dir s3://...`, `--pairs_csv gs://...`, `--root sftp://...` without `s3fs`, `gcsfs`, "
         "`paramiko`", USAGE, "pip install"),
    Case("unreachable", "an unreachable `hf://` output, an unreachable `http://` CSV", USAGE, "could not reach"),
    Case("split_nan", "`--split_fractions nan nan nan`", USAGE, "--split_fractions"),
    Case("threshold_nan", "`--mask_threshold_mm nan` (or `inf`)", USAGE, "--mask_threshold_mm"),
    Case("strength_huge", "`--deformation_strength nan` (or `1e6`)", USAGE, "--deformation_strength"),
    Case("num_subjects_huge", "`--num_subjects 10000000`", USAGE, "--num_subjects"),
]
OTHER_CASES = [
    Case("render_nan", "a CT that passes the input checks but renders constant", FAILED),
    Case("implausible_lungs", "a view whose lungs cover under 5 % or over 80 % of the image", FAILED),
    Case("killed_worker", "a `--num_proc 2` worker killed by SIGKILL", "the pool is replaced, the subject retried "
         "once alone, then named in `failures.jsonl`; the rest is built"),
    Case("orphaned_workers", "`kill -9` of the main process of a `--num_proc 2` build", "its workers exit within "
         "seconds; the resumed build is byte-identical to an uninterrupted one"),
    Case("disk_full", "a full disk while a shard is written", "that subject fails naming the file (`No space left "
         "on device`); `failures.jsonl` and the card are written for what finished"),
    Case("concurrent", "two builds started together into one folder", "one builds, the other is refused"),
    Case("stale_tmp", "`.*.tmp-*` files left by a killed run", "deleted at the next start"),
    Case("model_typo", "`load_segmenter('outputs/unet-typo')`, the Space's `--unet`", "`FileNotFoundError` naming "
         "the path, no Hub request (only `owner/name` that is no local path goes to the Hub)"),
    Case("model_typo_elsewhere", "`load_segmenter('outputs/unet-typo')` from a folder without `outputs/`; "
         "`python -m eval --unet outputs/x`; any name with `--local_only true`", "`FileNotFoundError` (eval: exit "
         "status 2, one line) saying it was taken as a local path, no Hub request (`hf://owner/name` is an explicit "
         "Hub id)"),
    Case("not_cached", "a Hub id while offline (also the Space's fallback)", "`FileNotFoundError`: not cached"),
    Case("tiny_real_image", "a 1x1 PNG in `python -m eval --real_dir`", "skipped with a warning naming it; "
         "`results.json` and `report.md` are written"),
    Case("long_answer", "a 1 MB model answer", "decoded in bounded memory: 128 objects, the rest one invalid object"),
    Case("bomb_boundary", "an upload of 50,000,001 pixels", 'the Space says "50,000,001 pixels; at most 50 MP"'),
    Case("blank_upload", "an all-black upload, a float image of NaN or infinite pixels, a DICOM whose rescale slope "
         "is NaN", 'the Space says "blank" instead of segmenting it'),
    Case("narrow_upload", "an image of 1 x 49,000,000 pixels (under the 50 MP limit)", "refused from its header "
         "before decoding: too small (or too narrow)"),
    Case("raw_id_path", "a subject id `../x` in `space/make_examples.py`", "the file stays in the examples folder"),
]
CASES = SUBJECT_CASES + BUILT_CASES + USAGE_CASES + OTHER_CASES
BY_NAME = {c.name: c for c in CASES}


def readme_table() -> str:
    """The README's table of ``CASES`` (one row per outcome, its inputs joined) and the count line under it."""
    outcomes = dict.fromkeys(c.outcome for c in CASES)
    rows = [f"| {'; '.join(c.bad_input for c in CASES if c.outcome == o)} | {o} |" for o in outcomes]
    count = f"{len(CASES)} cases tried (`tests/test_reliability.py`)."
    return "\n".join(["| bad input | what happens |", "| --- | --- |", *rows, "", count])


def test_readme_table_is_the_list_of_cases():
    assert readme_table() in (ROOT / "README.md").read_text()


# --------------------------------------------------------------------------------------------------
# Writing bad subjects
# --------------------------------------------------------------------------------------------------


def small_phantom():
    from dataset_builder.phantom import make_thorax_phantom

    return make_thorax_phantom(shape=(48, 40, 36), spacing_mm=(8.0, 8.0, 10.0))


def save(path: Path, data, affine):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data), affine), path)


def write_pairs(folder: Path) -> Path:
    """One pairs CSV with the good subjects and every pairs-type bad case of ``SUBJECT_CASES``."""
    ct = small_phantom()
    hu, lab, aff = ct.hu.astype(np.int16), ct.labels.astype(np.uint8), ct.affine
    save(folder / "ct.nii.gz", hu, aff)
    save(folder / "lab.nii.gz", lab, aff)
    raw = gzip.decompress((folder / "ct.nii.gz").read_bytes())
    (folder / "trunc.nii.gz").write_bytes(gzip.compress(raw[: len(raw) // 3]))
    (folder / "text.nii.gz").write_text("not an image")
    (folder / "empty.nii.gz").write_bytes(b"")
    save(folder / "lab_shape.nii.gz", lab[:, :, :-1], aff)
    shifted = aff.copy()
    shifted[0, 3] += 5
    save(folder / "lab_affine.nii.gz", lab, shifted)
    lungs = [i for i, n in ct.label_names.items() if n.startswith("lung_")]
    save(folder / "lab_nolung.nii.gz", np.where(np.isin(lab, lungs), 0, lab).astype(np.uint8), aff)
    save(folder / "tiny_ct.nii.gz", hu[:10, :10, :10], np.eye(4))
    save(folder / "tiny_lab.nii.gz", lab[:10, :10, :10], np.eye(4))
    save(folder / "fourd_ct.nii.gz", hu[..., None], aff)
    save(folder / "fourd_lab.nii.gz", lab[..., None], aff)
    nan = ct.hu.copy()
    nan[20:30, 15:25, 10:20] = np.nan
    save(folder / "nan.nii.gz", nan, aff)
    inf = ct.hu.copy()
    inf[5, 5, 5] = np.inf
    save(folder / "inf.nii.gz", inf, aff)
    save(folder / "one_ct.nii.gz", np.full((1, 1, 1), -800.0, np.float32), np.diag([500.0, 500.0, 500.0, 1.0]))
    save(folder / "one_lab.nii.gz", np.full((1, 1, 1), lungs[0], np.uint8), np.diag([500.0, 500.0, 500.0, 1.0]))
    write_implausible(folder, ct, lungs)
    rows = [
        "subject_id,ct,labels,label_names,split",
        "good,ct.nii.gz,lab.nii.gz,,",
        "x 1,ct.nii.gz,lab.nii.gz,,",
        "x_1,ct.nii.gz,lab.nii.gz,,",
        "x/1,ct.nii.gz,lab.nii.gz,,",
        "日本,ct.nii.gz,lab.nii.gz,,",
        "中国,ct.nii.gz,lab.nii.gz,,",
        "trunc,trunc.nii.gz,lab.nii.gz,,",
        "text,text.nii.gz,lab.nii.gz,,",
        "empty_file,empty.nii.gz,lab.nii.gz,,",
        "missing_file,missing.nii.gz,lab.nii.gz,,",
        "shape,ct.nii.gz,lab_shape.nii.gz,,",
        "affine,ct.nii.gz,lab_affine.nii.gz,,",
        "nolung,ct.nii.gz,lab_nolung.nii.gz,,",
        "tiny,tiny_ct.nii.gz,tiny_lab.nii.gz,,",
        "fourd,fourd_ct.nii.gz,fourd_lab.nii.gz,,",
        "badsplit,ct.nii.gz,lab.nii.gz,,holdout",
        "badnames,ct.nii.gz,lab.nii.gz,names_missing.csv,",
        "nan,nan.nii.gz,lab.nii.gz,,",
        "inf,inf.nii.gz,lab.nii.gz,,",
        "voxel500,one_ct.nii.gz,one_lab.nii.gz,,",
        "nolabels,ct.nii.gz",
        "hu_air,hu_air.nii.gz,lab.nii.gz,,",
        "hu_zero,hu_zero.nii.gz,lab.nii.gz,,",
        "hu_unit,hu_unit.nii.gz,lab.nii.gz,,",
        "hu_int8,hu_int8.nii.gz,lab.nii.gz,,",
        "hu_shift,hu_shift.nii.gz,lab.nii.gz,,",
        "hu_shift_padded,hu_shift_padded.nii.gz,lab.nii.gz,,",
        "hu_huge,hu_huge.nii.gz,lab.nii.gz,,",
        "all_lung,ct.nii.gz,lab_all_lung.nii.gz,,",
        "lab_wrap,ct.nii.gz,lab_wrap.nii.gz,,",
        "lab_nan,ct.nii.gz,lab_nan.nii.gz,,",
        "lab_unknown,ct.nii.gz,lab_unknown.nii.gz,,",
        "header_bomb,header_bomb.nii.gz,lab.nii.gz,,",
    ]
    (folder / "pairs.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder / "pairs.csv"


def write_implausible(folder: Path, ct, lungs: list[int]) -> None:
    """CTs and label maps that pass the file checks but whose intensities or labels cannot be a chest CT."""
    aff, lab = ct.affine, ct.labels.astype(np.uint8)
    save(folder / "hu_air.nii.gz", np.full(ct.hu.shape, -1000, np.int16), aff)
    save(folder / "hu_zero.nii.gz", np.zeros(ct.hu.shape, np.int16), aff)
    save(folder / "hu_unit.nii.gz", ((ct.hu + 1000) / 2000).astype(np.float32), aff)
    save(folder / "hu_int8.nii.gz", np.clip(ct.hu, -128, 127).astype(np.int8), aff)
    save(folder / "hu_shift.nii.gz", (ct.hu + 1024).astype(np.int16), aff)
    padded = ct.hu + 1024
    x, y = np.meshgrid(*(np.linspace(-1, 1, n) for n in ct.hu.shape[:2]), indexing="ij")
    padded[x**2 + y**2 > 1] = -2048 + 1024  # a real CT's outside-the-circle padding, shifted with the rest
    save(folder / "hu_shift_padded.nii.gz", padded.astype(np.int16), aff)
    huge = ct.hu.copy()
    huge[20:30, 15:25, 10:20] = 3e38
    save(folder / "hu_huge.nii.gz", huge.astype(np.float32), aff)
    save(folder / "lab_all_lung.nii.gz", np.full(lab.shape, lungs[0], np.uint8), aff)
    wrap = lab.astype(np.int32)
    wrap[wrap == lungs[0]] = 65536 + lungs[0]  # int16 would read it as the lung id
    save(folder / "lab_wrap.nii.gz", wrap, aff)
    nan = lab.astype(np.float32)
    nan[0, 0, 0] = np.nan
    save(folder / "lab_nan.nii.gz", nan, aff)
    unknown = lab.copy()
    unknown[0, 0, 0] = 250  # no TotalSegmentator id
    save(folder / "lab_unknown.nii.gz", unknown, aff)
    header = nib.Nifti1Header()
    header.set_data_dtype(np.float32)
    header.set_data_shape((400, 400, 400))
    header.set_qform(aff, 1)
    header.set_sform(aff, 1)
    (folder / "header_bomb.nii.gz").write_bytes(gzip.compress(header.binaryblock + b"\0" * 4 + b"\0" * 1000))


def write_totalseg_subject(folder: Path, ct, skip=()):
    save(folder / "ct.nii.gz", ct.hu.astype(np.int16), ct.affine)
    for label_id in np.unique(ct.labels):
        name = ct.label_names.get(int(label_id))
        if label_id and name not in skip:
            save(folder / "segmentations" / f"{name}.nii.gz", (ct.labels == label_id).astype(np.uint8), ct.affine)


def write_totalseg(root: Path) -> Path:
    """A TotalSegmentator folder: one good subject, the layout-type bad cases, a ``meta.csv`` with a BOM."""
    ct = small_phantom()
    write_totalseg_subject(root / "ts_good", ct)
    save(root / "ts_noseg" / "ct.nii.gz", ct.hu.astype(np.int16), ct.affine)
    write_totalseg_subject(root / "ts_segshape", ct)
    save(root / "ts_segshape" / "segmentations" / "heart.nii.gz", np.zeros((48, 40, 35), np.uint8), ct.affine)
    (root / "ts_loop").symlink_to(root / "ts_loop")
    (root / "meta.csv").write_text("\ufeffimage_id;split\nts_good;test\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """(pairs summary, pairs folder, TotalSegmentator summary, its folder): every subject case, built once."""
    from dataset_builder.build import BuildConfig, build

    base = tmp_path_factory.mktemp("reliability")
    csv_path = write_pairs(base / "pairs")
    small = dict(size_px=48, poses_per_view=1, views=["PA"], codec="none")
    pairs = build(BuildConfig(source="pairs", pairs_csv=str(csv_path), output_dir=str(base / "out_pairs"), **small))
    root = write_totalseg(base / "ts")
    ts = build(BuildConfig(source="totalsegmentator", root=str(root), output_dir=str(base / "out_ts"), **small))
    return pairs, base / "out_pairs", ts, base / "out_ts"


def reasons(corpus) -> dict[str, str]:
    pairs, pairs_out, ts, ts_out = corpus
    return {f["subject_id"]: f["reason"] for f in pairs["failures"] + ts["failures"]}


@pytest.mark.parametrize("case", SUBJECT_CASES, ids=lambda c: c.name)
def test_each_bad_subject_is_named_with_its_reason(corpus, case):
    assert case.expect in reasons(corpus)[case.name]


def test_failures_file_holds_every_bad_subject_and_summary_counts_every_subject(corpus):
    pairs, pairs_out, ts, ts_out = corpus
    logged = [json.loads(line)["subject_id"] for out in (pairs_out, ts_out) for line in open(out / "failures.jsonl")]
    assert sorted(logged) == sorted(c.name for c in SUBJECT_CASES)
    for summary, listed in ((pairs, 33), (ts, 4)):
        assert summary["subjects"] == listed == summary["built"] + summary["resumed_skipped"] + summary["failed"]


def test_good_subjects_are_built_each_in_its_own_shard(corpus):
    pairs, pairs_out, ts, ts_out = corpus
    assert pairs["built"] == 6 and ts["built"] == 1
    names = sorted(p.name for p in (pairs_out / "data").glob("*.parquet"))
    assert len(names) == 6 and sum("x_1" in n for n in names) == 3 and sum("~" in n for n in names) == 4
    assert [p.name for p in (ts_out / "data").glob("*.parquet")] == ["test-ts_good.parquet"]  # BOM meta.csv read


def test_no_row_has_a_constant_image_or_implausible_lungs(corpus):
    import io

    import pyarrow.parquet as pq
    from PIL import Image

    _, pairs_out, _, ts_out = corpus
    files = [p for out in (pairs_out, ts_out) for p in (out / "data").glob("*.parquet")]
    rows = [row for path in files for row in pq.read_table(path).to_pylist()]
    assert len(rows) == 7
    for row in rows:
        image = np.asarray(Image.open(io.BytesIO(row["image"]["bytes"])))
        lungs = next(s["mask"]["bytes"] for s in row["structures"] if s["name"] == "lungs")
        lungs = np.asarray(Image.open(io.BytesIO(lungs)), bool)
        assert image.min() < image.max() and 0.05 <= lungs.mean() <= 0.8 and image[lungs].std() >= 1


def test_plausibility_checks_accept_the_embedded_ct_the_phantom_and_its_pseudo_subjects():
    from dataset_builder.ct import load_embedded, validate_chest_ct
    from dataset_builder.sources import load_pseudo_subject

    assert load_embedded().hu.shape == (512, 512, 133)  # read_pair validates it
    for ct in (small_phantom(), *(load_pseudo_subject("phantom", f"p{i}", 0, 1.0) for i in range(3))):
        assert validate_chest_ct(ct) is ct


def test_a_lying_nifti_header_is_refused_before_its_data_is_read(tmp_path):
    from dataset_builder.ct import CTInputError, read_volume

    write_implausible(tmp_path, small_phantom(), [13])
    tracemalloc.start()
    with pytest.raises(CTInputError, match="header claims 400 x 400 x 400 voxels"):
        read_volume(tmp_path / "header_bomb.nii.gz", "CT")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 16 * 2**20, f"peak {peak / 2**20:.0f} MiB"


@pytest.mark.parametrize(("side", "length", "problem"), [(1100, "full", "over the limit"), (400, 1000, "truncated")])
def test_an_uncompressed_nifti_over_the_voxel_limit_or_shorter_than_its_header_is_refused(tmp_path, side, length,
                                                                                          problem):
    from dataset_builder.ct import CTInputError, read_volume

    header = nib.Nifti1Header()
    header.set_data_dtype(np.uint8)
    header.set_data_shape((side,) * 3)
    path = tmp_path / "big.nii"
    with open(path, "wb") as fh:
        fh.write(header.binaryblock + b"\0" * 4)
        fh.truncate(352 + side**3 if length == "full" else length)  # sparse: the 1.3 GB take no disk space
    with pytest.raises(CTInputError, match=problem):
        read_volume(path, "CT")


def test_a_quoted_line_break_in_a_csv_cell_is_kept(tmp_path):
    import pyarrow.parquet as pq

    from dataset_builder.build import BuildConfig, build

    ct = small_phantom()
    save(tmp_path / "ct.nii.gz", ct.hu.astype(np.int16), ct.affine)
    save(tmp_path / "lab.nii.gz", ct.labels.astype(np.uint8), ct.affine)
    (tmp_path / "pairs.csv").write_text('subject_id,ct,labels\n"nl\nid",ct.nii.gz,lab.nii.gz\n', encoding="utf-8")
    config = BuildConfig(source="pairs", pairs_csv=str(tmp_path / "pairs.csv"), output_dir=str(tmp_path / "o"),
                         size_px=48, poses_per_view=1, views=["PA"], codec="none")  # fmt: skip
    assert build(config)["built"] == 1
    [shard] = (tmp_path / "o" / "data").glob("*.parquet")
    assert pq.read_table(shard).column("subject_id").to_pylist() == ["nl\nid"]


def test_safe_names_are_injective_and_refuse_empty_ids():
    from chexanatomy.subjects import safe_name

    ids = ["x 1", "x_1", "x/1", "x:1", "日本", "中国", "ü", "é", "a" * 200, "a" * 201, "phantom-ps000"]
    names = [safe_name(i) for i in ids]
    assert len(set(names)) == len(ids) and safe_name("phantom-ps000") == "phantom-ps000"
    assert all(n.replace("~", "").replace("_", "").replace("-", "").replace(".", "").isalnum() for n in names)
    with pytest.raises(ValueError, match="empty"):
        safe_name("")


# --------------------------------------------------------------------------------------------------
# Usage errors: one line, exit status 2, nothing written
# --------------------------------------------------------------------------------------------------


def run_main(argv, capsys) -> tuple[int, str]:
    from dataset_builder.__main__ import main

    code = main(argv)
    err = capsys.readouterr().err
    return code, err


def assert_usage_error(code: int, err: str, case: str):
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err
    assert BY_NAME[case].expect in err


def test_size_px_out_of_range_is_a_usage_error(tmp_path, capsys):
    argv = ["build", "--source", "phantom", "--size_px", "5", "--output_dir", str(tmp_path / "o")]
    assert_usage_error(*run_main(argv, capsys), "size_px")
    assert not (tmp_path / "o").exists()


def test_missing_root_writes_nothing_and_the_corrected_command_works(tmp_path, capsys):
    root = write_totalseg(tmp_path / "ts")
    (root / "ts_loop").unlink()
    out = str(tmp_path / "o")
    command = ["build", "--source", "totalsegmentator", "--output_dir", out, *SMALL]
    assert_usage_error(*run_main([*command, "--root", str(tmp_path / "typo")], capsys), "no_root")
    assert not Path(out).exists()
    assert run_main([*command, "--root", str(root)], capsys)[0] == 0


@pytest.mark.parametrize("case", ["no_csv", "empty_id", "duplicate_id"])
def test_bad_pairs_csv_is_a_usage_error(tmp_path, capsys, case):
    csv_path = tmp_path / "pairs.csv"
    if case == "empty_id":
        csv_path.write_text("subject_id,ct,labels\na,a.nii.gz,b.nii.gz\n,a.nii.gz,b.nii.gz\n")
    elif case == "duplicate_id":
        csv_path.write_text("subject_id,ct,labels\na,a.nii.gz,b.nii.gz\na,c.nii.gz,b.nii.gz\n")
    out = tmp_path / "o"
    argv = ["build", "--source", "pairs", "--pairs_csv", str(csv_path), "--output_dir", str(out), *SMALL]
    assert_usage_error(*run_main(argv, capsys), case)
    assert not out.exists()


def test_meta_csv_without_a_split_column_is_a_usage_error(tmp_path, capsys):
    root = tmp_path / "ts"
    write_totalseg_subject(root / "s1", small_phantom())
    (root / "meta.csv").write_text("image_id;fold\ns1;test\n")
    argv = ["build", "--source", "totalsegmentator", "--root", str(root), "--output_dir", str(tmp_path / "o"), *SMALL]
    assert_usage_error(*run_main(argv, capsys), "meta_column")


def test_other_settings_and_an_emptied_config_are_usage_errors(tmp_path, capsys):
    out = str(tmp_path / "o")
    command = ["build", "--source", "phantom", "--num_subjects", "1", "--output_dir", out, *SMALL]
    assert run_main(command, capsys)[0] == 0
    assert_usage_error(*run_main([*command, "--seed", "1"], capsys), "settings")
    saved = tmp_path / "o" / "build_config.json"
    older = json.loads(saved.read_text())
    older["format_version"] = "2.1"  # a folder built by an older release: its lung fields end elsewhere
    saved.write_text(json.dumps(older))
    code, err = run_main(command, capsys)
    assert_usage_error(code, err, "settings")
    assert "format_version" in err
    (tmp_path / "o" / "build_config.json").write_text("")
    assert_usage_error(*run_main(command, capsys), "empty_config")
    assert_usage_error(*run_main(["card", "--output_dir", out], capsys), "empty_config")


def test_mistyped_codec_path_is_a_usage_error_and_never_reaches_the_hub(tmp_path, capsys, monkeypatch):
    hub_calls = forbid_hub(monkeypatch)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs").mkdir()
    argv = ["build", "--source", "phantom", "--num_subjects", "1", "--output_dir", "o", *SMALL[:-1]]
    assert_usage_error(*run_main([*argv, "outputs/codec-typo"], capsys), "codec_typo")
    assert_usage_error(*run_main([*argv, "codec-typo"], capsys), "codec_typo")
    assert hub_calls == [] and not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("case", "flags"),
    [
        ("split_nan", ["--split_fractions", "nan", "nan", "nan"]),
        ("split_nan", ["--split_fractions", "inf", "0", "0"]),
        ("threshold_nan", ["--mask_threshold_mm", "nan"]),
        ("threshold_nan", ["--mask_threshold_mm", "inf"]),
        ("strength_huge", ["--deformation_strength", "nan"]),
        ("strength_huge", ["--deformation_strength", "1e6"]),
        ("num_subjects_huge", ["--num_subjects", "10000000"]),
    ],
)
def test_non_finite_or_absurd_numbers_in_flags_are_usage_errors(tmp_path, capsys, case, flags):
    out = tmp_path / "o"
    argv = ["build", "--source", "phantom", "--num_subjects", "1", "--output_dir", str(out), *SMALL, *flags]
    assert_usage_error(*run_main(argv, capsys), case)
    assert not out.exists()


@pytest.mark.parametrize(
    ("flags", "package"),
    [(["--source", "phantom", "--output_dir", "s3://bucket/drr"], "s3fs"),
     (["--source", "pairs", "--pairs_csv", "gs://bucket/pairs.csv", "--output_dir", "o"], "gcsfs"),
     (["--source", "totalsegmentator", "--root", "sftp://host/ts", "--output_dir", "o"], "paramiko")],
)  # fmt: skip
def test_a_remote_url_without_its_filesystem_package_says_what_to_install(tmp_path, monkeypatch, capsys, flags,
                                                                          package):
    import importlib.util

    if importlib.util.find_spec(package):
        pytest.skip(f"{package} is installed here")
    monkeypatch.chdir(tmp_path)
    code, err = run_main(["build", *flags, *SMALL], capsys)
    assert_usage_error(code, err, "no_s3fs")
    assert package in err and not (tmp_path / "o").exists()


class FakeConnectError(Exception):
    """What an HTTP client raises for a host it cannot reach: no ``OSError``."""


def test_an_unreachable_remote_output_or_csv_is_one_line_naming_it(tmp_path, monkeypatch, capsys):
    import huggingface_hub

    def unreachable(*args, **kwargs):
        raise FakeConnectError("[Errno -2] Name or service not known")

    monkeypatch.setattr(huggingface_hub.HfApi, "repo_info", unreachable)
    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_tree", unreachable)
    monkeypatch.chdir(tmp_path)
    code, err = run_main(["build", "--source", "phantom", "--output_dir", "hf://datasets/me/drr", *SMALL], capsys)
    assert_usage_error(code, err, "unreachable")
    assert "hf://datasets/me/drr" in err
    csv_url = "http://127.0.0.1:9/pairs.csv"  # the loopback's discard port: nothing listens
    code, err = run_main(["build", "--source", "pairs", "--pairs_csv", csv_url, "--output_dir", "o", *SMALL], capsys)
    assert_usage_error(code, err, "unreachable")
    assert csv_url in err and "does not exist" not in err and not (tmp_path / "o").exists()


# --------------------------------------------------------------------------------------------------
# The view check: a CT that renders constant or with implausible lungs writes no row
# --------------------------------------------------------------------------------------------------


def nan_volume():
    """A pseudo-subject whose CT holds NaN (made in memory, so no input check sees it)."""
    ct = small_phantom()
    hu = ct.hu.copy()
    hu[20:30, 15:25, 10:20] = np.nan
    return dataclasses.replace(ct, subject_id="render_nan", hu=hu)


def test_a_ct_that_renders_constant_fails_and_writes_no_row(tmp_path):
    from dataset_builder.build import BuildConfig
    from dataset_builder.sources import Subject
    from dataset_builder.stages import build_subject

    config = BuildConfig(source="phantom", output_dir=str(tmp_path), size_px=48, poses_per_view=1, codec="none")
    result = build_subject(Subject("render_nan", nan_volume), config)
    assert result["status"] == "failed" and "constant" in result["reason"] and "rendered" in result["reason"]
    assert not list(tmp_path.rglob("*.parquet"))


def test_views_with_implausible_lungs_or_a_constant_image_are_refused():
    from dataset_builder.checks import check_views, view_problem
    from dataset_builder.ct import CTInputError
    from dataset_builder.render import RenderSettings, render_subject

    view = render_subject(small_phantom(), RenderSettings(size_px=48, views=("PA",), poses_per_view=1))[0]
    assert view_problem(view) is None
    square = np.zeros((48, 48), bool)
    square[1:47, 1:47] = True  # the one square "lung" of a 1x1x1 CT of 500 mm voxels
    speck = np.zeros((48, 48), bool)
    speck[20:23, 20:23] = True
    for masks, problem in (({**view.masks, "lungs": square}, "cover"), ({**view.masks, "lungs": speck}, "cover")):
        assert problem in view_problem(dataclasses.replace(view, masks=masks))
    no_lungs = {k: v for k, v in view.masks.items() if not k.startswith("lung")}
    assert "no lungs" in view_problem(dataclasses.replace(view, masks=no_lungs))
    flat = dataclasses.replace(view, image=np.zeros_like(view.image))
    with pytest.raises(CTInputError, match="PA pose 0: the image is constant"):
        check_views([view, flat])


# --------------------------------------------------------------------------------------------------
# Workers, locks, leftovers
# --------------------------------------------------------------------------------------------------


def kill_own_process():
    os.kill(os.getpid(), signal.SIGKILL)


def slow_load(load):
    time.sleep(0.5)
    return load()


def phantom_subjects(count: int, slow: bool = False):
    from dataset_builder.sources import Subject, pseudo_subjects

    subjects = pseudo_subjects("phantom", count, 0, 1.0)
    return [Subject(s.subject_id, functools.partial(slow_load, s.load)) for s in subjects] if slow else subjects


def test_a_killed_worker_is_retried_once_then_named_and_the_rest_completes(tmp_path, monkeypatch):
    from dataset_builder.build import BuildConfig, build
    from dataset_builder.sources import Subject

    subjects = [*phantom_subjects(3), Subject("killed_worker", kill_own_process)]
    monkeypatch.setattr("dataset_builder.build.list_subjects", lambda config: subjects)
    config = BuildConfig(source="phantom", output_dir=str(tmp_path), num_proc=2, size_px=48, views=["PA"],
                         poses_per_view=1, codec="none")  # fmt: skip
    summary = build(config)
    assert summary["built"] == 3 and summary["subjects"] == 4
    failures = [json.loads(line) for line in (tmp_path / "failures.jsonl").read_text().splitlines()]
    assert [f["subject_id"] for f in failures] == ["killed_worker"] and "worker process died" in failures[0]["reason"]
    assert (tmp_path / "README.md").exists() and not list(tmp_path.rglob(".*.tmp-*"))


def children_of(pid: int) -> list[int]:
    """Process ids of the live children of ``pid`` (Linux ``/proc``)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, exited but not yet reaped, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def build_phantoms(output_dir: str, num_proc: int = 1) -> dict:
    """A build of 3 phantom subjects, 48 px, PA (in this process, or in a forked one: see ``build_in_child``)."""
    import torch

    from dataset_builder.build import BuildConfig, build

    torch.set_num_threads(1)  # a fork of a process whose OpenMP pool has run hangs in its first parallel region
    return build(BuildConfig(source="phantom", num_subjects=3, size_px=48, poses_per_view=1, views=["PA"],
                             codec="none", output_dir=output_dir, num_proc=num_proc))  # fmt: skip


def test_killing_the_main_process_ends_its_workers_and_the_resumed_build_is_identical(tmp_path):
    parent = multiprocessing.get_context("fork").Process(target=build_phantoms, args=(str(tmp_path / "killed"), 2))
    parent.start()
    workers, deadline = [], time.time() + 60
    while len(workers) < 2 and parent.is_alive() and time.time() < deadline:
        workers = children_of(parent.pid)
        time.sleep(0.01)
    assert len(workers) == 2, "the build ended before its workers could be seen"
    os.kill(parent.pid, signal.SIGKILL)
    parent.join()
    deadline = time.time() + 5
    while any(alive(w) for w in workers) and time.time() < deadline:
        time.sleep(0.05)
    orphans = [w for w in workers if alive(w)]
    for pid in orphans:
        os.kill(pid, signal.SIGKILL)
    assert orphans == [], "workers outlived their parent"
    assert build_phantoms(str(tmp_path / "killed"))["subjects"] == 3  # resumed
    build_phantoms(str(tmp_path / "whole"))
    shards = {p.name: p.read_bytes() for p in (tmp_path / "killed" / "data").glob("*.parquet")}
    assert len(shards) == 3 and shards == {p.name: p.read_bytes() for p in (tmp_path / "whole" / "data").iterdir()}


def test_a_full_disk_fails_the_subject_naming_the_file_and_the_rest_is_recorded(tmp_path, monkeypatch):
    import errno

    from dataset_builder.build import BuildConfig, build

    write_bytes = Path.write_bytes

    def full_for_one_subject(self, data):
        if "phantom-ps001" in self.name:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return write_bytes(self, data)

    monkeypatch.setattr(Path, "write_bytes", full_for_one_subject)
    config = BuildConfig(source="phantom", output_dir=str(tmp_path), num_subjects=3, size_px=48, views=["PA"],
                         poses_per_view=1, codec="none")  # fmt: skip
    summary = build(config)
    assert summary["built"] == 2 and summary["failed"] == 1
    [failed] = [json.loads(line) for line in (tmp_path / "failures.jsonl").read_text().splitlines()]
    assert failed["subject_id"] == "phantom-ps001" and "No space left on device" in failed["reason"]
    assert "phantom-ps001.parquet" in failed["reason"] and (tmp_path / "README.md").exists()
    assert not list(tmp_path.rglob(".*.tmp-*"))


def build_in_child(output_dir: str, results) -> None:
    import torch

    from dataset_builder.build import BuildConfig, build

    # A forked child of a process whose OpenMP pool has run (any earlier torch test) hangs in its first parallel
    # region; one thread, as the builder's own workers use (build._init_worker), never enters one.
    torch.set_num_threads(1)

    config = BuildConfig(source="phantom", output_dir=output_dir, size_px=48, views=["PA"], poses_per_view=1,
                         codec="none", num_subjects=3)  # fmt: skip
    try:
        results.put(build(config)["built"])
    except Exception as err:  # noqa: BLE001 - the refusal (or anything else) is the test's answer
        results.put(str(err))


def test_two_concurrent_builds_into_one_folder_render_each_subject_once(tmp_path, monkeypatch):
    monkeypatch.setattr("dataset_builder.build.list_subjects", lambda config: phantom_subjects(3, slow=True))
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    children = [ctx.Process(target=build_in_child, args=(str(tmp_path), results)) for _ in range(2)]
    for child in children:
        child.start()
    outcomes = sorted((results.get(timeout=120) for _ in children), key=str)
    for child in children:
        child.join()
    assert outcomes[0] == 3 and BY_NAME["locked"].expect in outcomes[1]  # built once; the other refused
    assert len(list((tmp_path / "data").glob("*.parquet"))) == 3


def test_a_held_folder_lock_refuses_the_build(tmp_path, capsys):
    from filelock import FileLock

    tmp_path.mkdir(exist_ok=True)
    with FileLock(tmp_path / ".build.lock"):
        argv = ["build", "--source", "phantom", "--num_subjects", "1", "--output_dir", str(tmp_path), *SMALL]
        assert_usage_error(*run_main(argv, capsys), "locked")


@pytest.mark.parametrize(("held", "shard", "refused"), [(".build.lock", "0/2", True),
                                                      (".build-1-of-2.lock", "0/1", True),
                                                      (".build-1-of-3.lock", "0/2", True),
                                                      (".build-1-of-2.lock", "0/2", False)])  # fmt: skip
def test_overlapping_shard_parts_exclude_each_other_and_disjoint_ones_do_not(tmp_path, capsys, held, shard, refused):
    from filelock import FileLock

    argv = ["build", "--source", "phantom", "--num_subjects", "2", "--output_dir", str(tmp_path), "--shard", shard,
            *SMALL]  # fmt: skip
    with FileLock(tmp_path / held):  # a build of that part is running
        code, err = run_main(argv, capsys)
    if refused:
        assert_usage_error(code, err, "overlapping_shards")
        assert not list(tmp_path.rglob("*.parquet"))
    else:
        assert code in (0, 1) and "another build" not in err  # 1: no subject of the two in part 0/2


def test_stale_temporary_files_of_this_build_are_swept_at_start(tmp_path):
    from dataset_builder.build import BuildConfig, build

    config = BuildConfig(source="phantom", output_dir=str(tmp_path), num_subjects=2, size_px=48, views=["PA"],
                         poses_per_view=1, codec="none")  # fmt: skip
    build(config)
    data = tmp_path / "data"
    own = [data / ".train-phantom-ps001.parquet.tmp-999999", tmp_path / ".failures.jsonl.tmp-999999"]
    own.append(tmp_path / ".build_config.json.tmp-999999")
    foreign = data / ".train-other.parquet.tmp-999999"  # another shard's, perhaps being written now
    for path in [*own, foreign]:
        path.write_bytes(b"partial")
    assert build(config)["resumed_skipped"] == 2
    assert not any(p.exists() for p in own) and foreign.exists()


# --------------------------------------------------------------------------------------------------
# Model paths: a typo never reaches the Hub
# --------------------------------------------------------------------------------------------------


def forbid_hub(monkeypatch) -> list:
    """Record (and refuse) every ``snapshot_download``; returns the list of calls."""
    import huggingface_hub

    calls = []

    def fake(repo_id, *args, **kwargs):
        calls.append(repo_id)
        raise AssertionError(f"the Hub was asked for {repo_id}")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    return calls


@pytest.mark.parametrize("name", ["outputs/unet-typo", "unet-typo", "./unet", "outputs/a/b", "x y/z", "~/nothing"])
def test_mistyped_local_model_path_is_file_not_found_without_a_hub_request(tmp_path, monkeypatch, name):
    from chexanatomy.inference import load_segmenter

    calls = forbid_hub(monkeypatch)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs").mkdir()
    with pytest.raises(FileNotFoundError, match="no model folder at"):
        load_segmenter(name, device="cpu")
    assert calls == []


@pytest.mark.parametrize("name", ["outputs/unet-typo", "models/x", "checkpoints/unet", "Outputs/x"])
def test_a_local_looking_path_is_never_looked_up_even_where_its_folder_does_not_exist(tmp_path, monkeypatch, name):
    from chexanatomy.inference import load_segmenter

    calls = forbid_hub(monkeypatch)
    monkeypatch.chdir(tmp_path)  # no outputs/ here
    with pytest.raises(FileNotFoundError, match=f"no model folder at {name} .taken as a local path.*hf://{name}"):
        load_segmenter(name, device="cpu")
    assert calls == []


def test_load_segmenter_local_only_never_asks_the_hub_even_for_a_hub_shaped_name(tmp_path, monkeypatch):
    from chexanatomy.inference import load_segmenter

    calls = forbid_hub(monkeypatch)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="no model folder at someone/unet"):
        load_segmenter("someone/unet", device="cpu", local_only=True)
    assert calls == []


def test_eval_model_typo_and_local_only_are_usage_errors_without_a_hub_request(tmp_path, monkeypatch, capsys):
    from chexanatomy.locate import locate_model
    from eval.__main__ import main

    calls = forbid_hub(monkeypatch)
    monkeypatch.chdir(tmp_path)
    for argv in (["--unet", "outputs/x"], ["--unet", "someone/unet", "--local_only", "true"]):
        assert main(["--vlm", "none", "--output_dir", "o", *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: no model folder at") and err.count("\n") == 1 and "local path" in err
    assert calls == [] and not (tmp_path / "o").exists()
    with pytest.raises(AssertionError, match="the Hub was asked for outputs/x"):
        locate_model("hf://outputs/x")  # explicit: the one way to the Hub user "outputs"
    assert calls == ["outputs/x"]


def test_hub_id_offline_says_not_cached():
    from chexanatomy.inference import load_segmenter
    from chexanatomy.locate import hub_id

    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert hub_id("chexanatomy/unet-anatomy") == "chexanatomy/unet-anatomy"  # the package folder does not count
    with pytest.raises(FileNotFoundError, match="not cached"):
        load_segmenter("someone/model-that-is-not-cached", device="cpu")


def test_space_model_typo_and_offline_fallback_are_one_line_errors(tmp_path, monkeypatch, capsys):
    from test_space import space_app

    import chexanatomy.locate

    app = space_app()
    calls = forbid_hub(monkeypatch)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs").mkdir()
    assert app.main(["--vlm", "none", "--unet", "outputs/unet-typo"]) == 2 and calls == []
    err = capsys.readouterr().err
    assert err.startswith("error: no model folder at outputs/unet-typo") and err.count("\n") == 1
    assert app.main(["--vlm", "bundled-unet"]) == 2 and "bundled-vlm" in capsys.readouterr().err
    monkeypatch.undo()

    def missing(kind):
        raise FileNotFoundError(kind)

    monkeypatch.setattr(chexanatomy.locate, "bundled_model_path", missing)
    with pytest.raises(FileNotFoundError, match="not cached"):
        app.load_model("bundled-unet", "unet", "cpu")


# --------------------------------------------------------------------------------------------------
# Decoder memory, the Space's size message, example file names
# --------------------------------------------------------------------------------------------------


def test_a_tiny_image_in_the_real_folder_is_skipped_and_the_evaluation_completes(phantom_corpus, tmp_path):
    from PIL import Image

    from chexanatomy.examples import real_radiographs
    from eval.__main__ import EvalConfig, run

    real = tmp_path / "real"
    real.mkdir()
    name, image = next(iter(real_radiographs().items()))
    image.resize((128, 128)).save(real / f"{name}.png")
    Image.new("L", (1, 1), 128).save(real / "dot.png")
    out = tmp_path / "eval"
    config = EvalConfig(vlm="none", unet="bundled-unet", corpus_dir=str(phantom_corpus), split="train", max_images=1,
                        output_dir=str(out), studies=["plausibility"], real_dir=str(real), device="cpu")  # fmt: skip
    with pytest.warns(UserWarning, match="dot.png"):
        run(config, [])
    saved = json.loads((out / "results.json").read_text())
    assert [r["image"] for r in saved["studies"]["plausibility"]["rows"]] == [name]
    assert (out / "report.md").exists()


class RefusingSegmenter:
    """A stand-in model that refuses every image, as ``grey_image`` refuses a 1x1 one."""

    structures = ["lung_left", "lung_right", "heart"]

    def segment(self, image, names):
        raise ValueError("the image is 1x1 pixels: too small to segment")


def test_the_plausibility_study_skips_an_image_its_model_refuses():
    from PIL import Image

    from eval.plausibility import plausibility_study

    with pytest.warns(UserWarning, match="skipped 1 image.*dot for unet"):
        study = plausibility_study({"unet": RefusingSegmenter()}, {"dot": Image.new("L", (1, 1))})
    assert study["rows"] == [] and study["summary"]["unet passed"] == "0 / 0 images"


class ZeroCodec:
    """A stand-in codec: every code decodes to a map that is positive everywhere."""

    def decode_indices(self, indices):
        import torch

        return torch.ones(len(indices), 64, 64)


@pytest.mark.parametrize("chunks", [4_000, 500_000], ids=["8KB", "1MB"])
def test_a_long_answer_is_decoded_in_bounded_memory(chunks):
    from chexanatomy.mask_tokens import MAX_OBJECTS_PER_ANSWER, decode, decode_detections

    hw = (512, 512)
    junk = ";x" * chunks  # one-character objects
    masks = (MAX_OBJECTS_PER_ANSWER + 1) * hw[0] * hw[1]  # bytes of the masks that may exist at once
    for decoder in (functools.partial(decode, codec=ZeroCodec()), decode_detections):
        tracemalloc.start()
        decoded = decoder(junk, hw)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < masks + 16 * 2**20, f"peak {peak / 2**20:.0f} MiB"
        assert len(decoded) == MAX_OBJECTS_PER_ANSWER + 1 and not any(o.valid for o in decoded)
        assert decoded[-1].name == f"{chunks - MAX_OBJECTS_PER_ANSWER} more objects (over {MAX_OBJECTS_PER_ANSWER})"
        del decoded


def test_objects_over_the_cap_are_one_invalid_object():
    from chexanatomy.mask_tokens import MAX_OBJECTS_PER_ANSWER, decode

    one = "<loc0000><loc0000><loc0500><loc0500>" + "<seg001>" * 16 + " heart"
    objects = decode(" ; ".join([one] * (MAX_OBJECTS_PER_ANSWER + 5)), (32, 32), ZeroCodec())
    assert len(objects) == MAX_OBJECTS_PER_ANSWER + 1
    assert all(o.valid for o in objects[:-1]) and not objects[-1].valid and objects[-1].name.startswith("5 more")


def test_bomb_message_at_the_boundary_gives_exact_pixels(tmp_path):
    from test_space import png_header_only, space_module

    reading = space_module("reading")
    path = tmp_path / "big.png"
    path.write_bytes(png_header_only(50_000_001, 1))
    with pytest.raises(reading.InputError) as info:
        reading.read_upload(path)
    assert "50,000,001 pixels; at most 50 megapixels" in str(info.value)


def test_a_blank_upload_is_said_to_be_blank_not_segmented(tmp_path):
    from PIL import Image
    from test_space import space_module, squares, write_dicom

    reading = space_module("reading")
    Image.new("L", (64, 64)).save(tmp_path / "black.png")
    Image.fromarray(np.full((64, 64), np.nan, np.float32)).save(tmp_path / "nan.tiff")
    Image.fromarray(np.full((64, 64), np.inf, np.float32)).save(tmp_path / "inf.tiff")
    write_dicom(tmp_path / "slope.dcm", squares(background=3000, inner=500), rescale=(float("nan"), 0.0))
    for name in ("black.png", "nan.tiff", "inf.tiff", "slope.dcm"):
        with pytest.raises(reading.InputError, match=f"{name} is blank"):
            reading.read_upload(tmp_path / name)
    Image.fromarray(squares(background=200, inner=20).astype(np.uint8)).save(tmp_path / "fine.png")
    assert reading.read_upload(tmp_path / "fine.png")[0].size == (64, 64)


def test_an_absurdly_narrow_image_is_refused_from_its_header(tmp_path):
    from test_space import png_header_only, space_module

    reading = space_module("reading")
    path = tmp_path / "line.png"
    path.write_bytes(png_header_only(1, 49_000_000))
    tracemalloc.start()
    with pytest.raises(reading.InputError, match="1x49000000 pixels is too small .or too narrow."):
        reading.read_upload(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 16 * 2**20, f"peak {peak / 2**20:.0f} MiB"


def test_example_names_never_put_a_raw_subject_id_in_a_path():
    from test_space import load_module

    make_examples = load_module("chexanatomy_space_make_examples", ROOT / "space" / "make_examples.py")
    name = make_examples.example_name({"view": "PA", "subject_id": "../x/y", "pose_index": 0})
    assert "/" not in name and name.startswith("pa_.._x_y~")


if __name__ == "__main__":
    print(readme_table())
