"""Real-collection inputs: the TotalSegmentator layout, CT + label-map pairs, DICOM, bad input, shards, workers."""

import csv
import gzip
import hashlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from chexanatomy.anatomy import TOTALSEG_V1, TOTALSEG_V2
from dataset_builder.__main__ import main
from dataset_builder.build import BuildConfig, build
from dataset_builder.ct import read_pair, read_totalsegmentator_subject
from dataset_builder.phantom import make_thorax_phantom
from dataset_builder.render import RenderSettings, render_subject

SMALL = dict(size_px=48, poses_per_view=1, views=["PA"], codec="none")


def small_phantom():
    return make_thorax_phantom(shape=(48, 40, 36), spacing_mm=(8.0, 8.0, 10.0))


def save(path: Path, data, affine):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data), affine), path)


def write_totalseg_subject(folder: Path, ct, skip=()):
    save(folder / "ct.nii.gz", ct.hu.astype(np.int16), ct.affine)
    for label_id in np.unique(ct.labels):
        name = ct.label_names.get(int(label_id))
        if label_id and name not in skip:
            save(folder / "segmentations" / f"{name}.nii.gz", (ct.labels == label_id).astype(np.uint8), ct.affine)


@pytest.fixture(scope="module")
def totalseg_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("totalseg")
    ct = small_phantom()
    for name in ("s_good1", "s_good2"):
        write_totalseg_subject(root / name, ct)
    write_totalseg_subject(root / "s_trunc", ct)
    raw = gzip.decompress((root / "s_trunc" / "ct.nii.gz").read_bytes())
    (root / "s_trunc" / "ct.nii.gz").write_bytes(gzip.compress(raw[: len(raw) // 3]))
    save(root / "s_noseg" / "ct.nii.gz", ct.hu.astype(np.int16), ct.affine)
    lungs = [n for n in ct.label_names.values() if n.startswith("lung_")]
    write_totalseg_subject(root / "s_nolung", ct, skip=lungs)
    write_totalseg_subject(root / "s_shape", ct)
    save(root / "s_shape" / "segmentations" / "heart.nii.gz", np.zeros((48, 40, 35), np.uint8), ct.affine)
    tiny = make_thorax_phantom(shape=(10, 10, 10), spacing_mm=(1.0, 1.0, 1.0))
    write_totalseg_subject(root / "s_tiny", tiny)
    (root / "s_text").mkdir()
    (root / "s_text" / "ct.nii.gz").write_text("not an image")
    (root / "s_text" / "segmentations").mkdir()
    (root / "meta.csv").write_text("image_id;age;split\ns_good1;60;test\ns_good2;55;val\n")
    return root


def test_totalsegmentator_layout_builds_good_subjects_and_reports_bad_ones(totalseg_root, tmp_path):
    out = tmp_path / "corpus"
    summary = build(BuildConfig(source="totalsegmentator", root=str(totalseg_root), output_dir=str(out), **SMALL))
    assert summary["built"] == 2
    shards = sorted(p.name for p in (out / "data").glob("*.parquet"))
    assert shards == ["test-s_good1.parquet", "validation-s_good2.parquet"]  # meta.csv splits honoured
    reasons = {f["subject_id"]: f["reason"] for f in summary["failures"]}
    lines = (out / "failures.jsonl").read_text().splitlines()
    assert len(lines) == len(reasons) == 6
    assert "truncated" in reasons["s_trunc"] or "cannot" in reasons["s_trunc"]
    assert "segmentations" in reasons["s_noseg"]
    assert "no lung" in reasons["s_nolung"]
    assert "shape" in reasons["s_shape"]
    assert "field of view" in reasons["s_tiny"]
    assert "ct.nii.gz" in reasons["s_text"]


def test_per_structure_files_merge_into_the_original_label_map(totalseg_root):
    vol = read_totalsegmentator_subject(totalseg_root / "s_good1")
    assert np.array_equal(vol.labels, small_phantom().labels)
    assert vol.label_names[10] == "lung_upper_lobe_left"


def test_command_fails_only_when_no_subject_succeeds(totalseg_root, tmp_path):
    bad_root = tmp_path / "bad"
    bad_root.mkdir()
    (bad_root / "s_x").mkdir()
    flags = ["--size_px", "48", "--poses_per_view", "1", "--views", "PA", "--codec", "none"]
    command = ["build", "--source", "totalsegmentator"]
    assert main([*command, "--root", str(bad_root), "--output_dir", str(tmp_path / "a"), *flags]) == 1
    assert main([*command, "--root", str(totalseg_root), "--output_dir", str(tmp_path / "b"), *flags]) == 0


def test_v1_and_v2_multilabel_pairs_from_a_csv(tmp_path):
    ct = small_phantom()
    v1_ids = {name: i for i, name in TOTALSEG_V1.items()}
    v1 = np.zeros_like(ct.labels)
    for label_id in np.unique(ct.labels)[1:]:
        name = TOTALSEG_V2[int(label_id)]
        name = "heart_ventricle_left" if name == "heart" else name  # v1 has chambers, not "heart"
        if name in v1_ids:
            v1[ct.labels == label_id] = v1_ids[name]
    save(tmp_path / "a_ct.nii.gz", ct.hu.astype(np.int16), ct.affine)
    save(tmp_path / "a_seg.nii.gz", ct.labels.astype(np.uint8), ct.affine)
    save(tmp_path / "b_seg.nii.gz", v1.astype(np.uint8), ct.affine)
    with open(tmp_path / "pairs.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerows(
            [
                ["subject_id", "ct", "labels", "label_names"],
                ["a", "a_ct.nii.gz", "a_seg.nii.gz", "v2"],
                ["b", "a_ct.nii.gz", "b_seg.nii.gz", "v1"],
            ]
        )
    out = tmp_path / "corpus"
    summary = build(BuildConfig(source="pairs", pairs_csv=str(tmp_path / "pairs.csv"), output_dir=str(out), **SMALL))
    assert summary["built"] == 2 and summary["failed"] == 0
    vol = read_pair(tmp_path / "a_ct.nii.gz", tmp_path / "b_seg.nii.gz", "v1", "b")
    assert "heart" in vol.structure_labels.values() and "clavicle_left" in vol.structure_labels.values()


def test_dicom_series_ct_renders_with_correct_laterality(tmp_path):
    sitk = pytest.importorskip("SimpleITK")
    ct = small_phantom()
    image = sitk.GetImageFromArray(ct.hu.astype(np.int16).transpose(2, 1, 0))
    spacing = [float(v) for v in np.diag(ct.affine)[:3]]
    origin_ras = ct.affine[:3, 3]
    image.SetSpacing(spacing)
    image.SetOrigin([-origin_ras[0], -origin_ras[1], origin_ras[2]])  # RAS -> LPS
    image.SetDirection([-1, 0, 0, 0, -1, 0, 0, 0, 1])
    folder = tmp_path / "dicom"
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    series = "1.2.826.0.1.3680043.2.1125.1"
    for k in range(image.GetDepth()):
        s = image[:, :, k]
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        for tag, value in {
            "0008|0060": "CT", "0020|000d": series + ".0", "0020|000e": series, "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{v:.4f}" for v in position), "0020|0037": "-1\\0\\0\\0\\-1\\0",
            "0028|1052": "0", "0028|1053": "1", "0008|0018": f"{series}.{k + 1}",
        }.items():  # fmt: skip
            s.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{k:03d}.dcm"))
        writer.Execute(s)
    save(tmp_path / "seg.nii.gz", ct.labels.astype(np.uint8), ct.affine)
    vol = read_pair(folder, tmp_path / "seg.nii.gz", "v2", "dicom")
    np.testing.assert_allclose(vol.affine, ct.affine, atol=1e-3)
    assert np.array_equal(vol.hu, ct.hu.astype(np.int16).astype(np.float32))
    view = render_subject(vol, RenderSettings(size_px=48, views=("PA",), poses_per_view=1, randomize=False))[0]
    cols = np.argwhere(view.masks["lung_left"])[:, 1]
    assert cols.mean() > 24  # the patient's left lung on the image right


def digest(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((folder / "data").glob("*.parquet"))}


def test_two_machine_shards_load_as_one_dataset(tmp_path):
    import datasets

    cfg = dict(source="phantom", num_subjects=6, output_dir=str(tmp_path / "c"), **SMALL)
    a = build(BuildConfig(shard="0/2", **cfg))
    b = build(BuildConfig(shard="1/2", **cfg))
    assert a["built"] + b["built"] == 6 and a["built"] > 0 and b["built"] > 0
    assert (tmp_path / "c" / "failures-0-of-2.jsonl").exists()
    ds = datasets.load_dataset(str(tmp_path / "c"), cache_dir=str(tmp_path / "hf"))
    ids = [sid for split in ds.values() for sid in split["subject_id"]]
    assert sorted(ids) == [f"phantom-ps{i:03d}" for i in range(6)]


def test_worker_processes_write_the_same_files(tmp_path):
    cfg = dict(source="phantom", num_subjects=3, **SMALL)
    build(BuildConfig(output_dir=str(tmp_path / "one"), **cfg))
    build(BuildConfig(output_dir=str(tmp_path / "two"), num_proc=2, **cfg))
    assert digest(tmp_path / "one") == digest(tmp_path / "two")
