"""Remote storage through fsspec (memory:// and file:// stand in for hf://, s3://, gs://) and publishing while building.

No network: the Hub is a fake ``HfApi`` whose network methods record what would have been sent.
"""

import functools
import hashlib
import time
from pathlib import Path
from types import SimpleNamespace

import fsspec
import pytest
from huggingface_hub import HfApi
from test_sources import small_phantom, write_totalseg_subject

from dataset_builder.build import BuildConfig, BuildError, build
from dataset_builder.sources import Subject, pseudo_subjects

SMALL = dict(size_px=48, poses_per_view=1, views=["PA"], codec="none")


def local_shards(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((folder / "data").glob("*.parquet"))}


def memory_shards(url: str) -> dict[str, str]:
    fs, path = fsspec.core.url_to_fs(url)
    files = sorted(fs.glob(f"{path}/data/*.parquet"))
    return {f.rsplit("/", 1)[1]: hashlib.sha256(fs.cat_file(f)).hexdigest() for f in files}


@pytest.fixture()
def memory():
    """A fresh prefix of fsspec's in-memory filesystem, removed afterwards."""
    fs = fsspec.filesystem("memory")
    prefix = f"memory://test-{time.monotonic_ns()}"
    yield prefix
    fs.rm(prefix.removeprefix("memory://"), recursive=True) if fs.exists(prefix.removeprefix("memory://")) else None


@pytest.fixture(scope="module")
def totalseg(tmp_path_factory):
    """A local TotalSegmentator layout: two good subjects and one with a truncated CT."""
    root = tmp_path_factory.mktemp("ts")
    ct = small_phantom()
    for name in ("s_good1", "s_good2", "s_trunc"):
        write_totalseg_subject(root / name, ct)
    data = (root / "s_trunc" / "ct.nii.gz").read_bytes()
    (root / "s_trunc" / "ct.nii.gz").write_bytes(data[: len(data) // 3])
    (root / "meta.csv").write_text("image_id;split\ns_good1;test\n")
    return root


def upload(local: Path, url: str) -> None:
    fs, path = fsspec.core.url_to_fs(url)
    for p in sorted(local.rglob("*")):
        if p.is_file():
            fs.pipe_file(f"{path}/{p.relative_to(local).as_posix()}", p.read_bytes())


def test_memory_input_and_output_give_the_local_bytes_and_resume(totalseg, memory, tmp_path):
    local = build(BuildConfig(source="totalsegmentator", root=str(totalseg), output_dir=str(tmp_path / "l"), **SMALL))
    upload(totalseg, f"{memory}/ts")
    cfg = dict(source="totalsegmentator", root=f"{memory}/ts", output_dir=f"{memory}/out",
               cache_dir=str(tmp_path / "cache"), **SMALL)  # fmt: skip
    remote = build(BuildConfig(**cfg))
    assert remote["built"] == local["built"] == 2 and [f["subject_id"] for f in remote["failures"]] == ["s_trunc"]
    assert memory_shards(f"{memory}/out") == local_shards(tmp_path / "l")
    assert "test-s_good1.parquet" in memory_shards(f"{memory}/out")  # meta.csv read through the cache
    fs = fsspec.filesystem("memory")
    out = f"{memory}/out".removeprefix("memory://")
    assert {"README.md", "build_config.json", "example.png", "failures.jsonl"} <= {
        p.rsplit("/", 1)[1] for p in fs.ls(out, detail=False)
    }
    again = build(BuildConfig(**cfg))
    assert again["resumed_skipped"] == 2 and again["built"] == 0


def test_pairs_csv_in_memory_reads_each_file_once_through_the_cache(totalseg, memory, tmp_path):
    from test_reliability import save

    ct = small_phantom()
    pairs = tmp_path / "pairs"
    save(pairs / "cts" / "a.nii.gz", ct.hu.astype("int16"), ct.affine)
    save(pairs / "labels" / "a.nii.gz", ct.labels.astype("int16"), ct.affine)
    (pairs / "names.json").write_text(__import__("json").dumps({str(k): v for k, v in ct.label_names.items()}))
    (pairs / "pairs.csv").write_text("subject_id,ct,labels,label_names\na,cts/a.nii.gz,labels/a.nii.gz,names.json\n")
    upload(pairs, f"{memory}/pairs")
    cfg = dict(source="pairs", pairs_csv=f"{memory}/pairs/pairs.csv", cache_dir=str(tmp_path / "cache"), **SMALL)
    first = build(BuildConfig(output_dir=f"{memory}/out1", **cfg))
    assert first["built"] == 1, first["failures"]
    fsspec.filesystem("memory").rm(f"{memory}/pairs/cts".removeprefix("memory://"), recursive=True)
    second = build(BuildConfig(output_dir=f"{memory}/out2", **cfg))  # the CT is gone remotely: read from the cache
    assert second["built"] == 1 and memory_shards(f"{memory}/out1") == memory_shards(f"{memory}/out2")
    build(BuildConfig(source="pairs", pairs_csv=str(pairs / "pairs.csv"), output_dir=str(tmp_path / "l"), **SMALL))
    assert local_shards(tmp_path / "l") == memory_shards(f"{memory}/out1")


def test_file_urls_are_local_paths(totalseg, tmp_path):
    cfg = dict(source="totalsegmentator", **SMALL)
    build(BuildConfig(root=str(totalseg), output_dir=str(tmp_path / "plain"), **cfg))
    build(BuildConfig(root=f"file://{totalseg}", output_dir=f"file://{tmp_path / 'url'}", **cfg))
    assert local_shards(tmp_path / "plain") == local_shards(tmp_path / "url")
    assert (tmp_path / "url" / "README.md").exists() and (tmp_path / "url" / ".build.lock").exists()


def test_a_missing_remote_root_is_a_usage_error(memory, tmp_path):
    with pytest.raises(ValueError, match="is not a folder"):
        build(BuildConfig(source="totalsegmentator", root=f"{memory}/nothing", output_dir=str(tmp_path), **SMALL))
    assert not (tmp_path / "build_config.json").exists()


# --------------------------------------------------------------------------------------------------
# Publishing while building
# --------------------------------------------------------------------------------------------------


class FakeHub(HfApi):
    """``HfApi`` whose network calls are recorded; ``run_as_future`` (a local thread) is the real one."""

    def __init__(self, present=()):
        super().__init__()
        self.present, self.commits, self.card_uploads = set(present), [], []

    def create_repo(self, repo_id, **kwargs):
        return SimpleNamespace(repo_id=repo_id)

    def list_repo_files(self, repo_id, **kwargs):
        return sorted(self.present)

    def create_commit(self, repo_id, operations, **kwargs):
        names = [op.path_in_repo for op in operations]
        self.commits.append((time.monotonic(), names))
        self.present |= set(names)
        return "commit"

    def upload_folder(self, repo_id, folder_path, allow_patterns, **kwargs):
        self.card_uploads.append(sorted(allow_patterns))
        return f"https://huggingface.co/datasets/{repo_id}/commit/0"

    def create_tag(self, *args, **kwargs):
        return None


def slow(load):
    time.sleep(0.4)
    return load()


def test_push_to_hub_uploads_shards_as_they_appear_and_resumes(tmp_path, monkeypatch):
    hub = FakeHub()
    monkeypatch.setattr("dataset_builder.hub.HfApi", lambda: hub)
    monkeypatch.setattr("dataset_builder.hub.PUSH_EVERY_MINUTES", 0.1 / 60)  # a commit every 0.1 s
    subjects = [Subject(s.subject_id, functools.partial(slow, s.load)) for s in pseudo_subjects("phantom", 4, 0, 1.0)]
    monkeypatch.setattr("dataset_builder.build.list_subjects", lambda config: subjects)
    cfg = dict(source="phantom", output_dir=str(tmp_path), push_to_hub=True, hub_model_id="me/drr", **SMALL)
    summary = build(BuildConfig(**cfg))
    shards = sorted(f"data/{p.name}" for p in (tmp_path / "data").glob("*.parquet"))
    committed = [name for _, names in hub.commits for name in names]
    assert len(shards) == 4 and sorted(committed) == shards  # every shard once
    assert len(hub.commits) >= 2  # as they appeared, not in one commit at the end
    assert hub.card_uploads == [["README.md", "build_config.json", "example.png"]] and "pushed" in summary
    hub.commits.clear()
    subjects.append(pseudo_subjects("phantom", 5, 0, 1.0)[-1])
    build(BuildConfig(**cfg))  # resumed: only the new subject's shard goes up
    assert [names for _, names in hub.commits] == [[f"data/{p}" for p in sorted(local_shards(tmp_path))
                                                    if f"data/{p}" not in shards]]  # fmt: skip


def test_push_to_hub_needs_a_repo_and_a_local_folder(memory):
    with pytest.raises(ValueError, match="hub_model_id"):
        BuildConfig(push_to_hub=True)
    with pytest.raises(BuildError, match="local --output_dir"):
        build(BuildConfig(source="phantom", output_dir=f"{memory}/x", push_to_hub=True, hub_model_id="me/x", **SMALL))


# --------------------------------------------------------------------------------------------------
# The CT-RATE recipe: pairs CSV from its metadata, volumes and label maps at URLs
# --------------------------------------------------------------------------------------------------


def test_ct_rate_pairs_csv_builds_with_one_split_per_patient(memory, tmp_path):
    from test_reliability import save

    from dataset_builder.ct_rate import main as ct_rate_main

    ct = small_phantom()
    local = tmp_path / "ctrate"
    names = ["train_7_a_1.nii.gz", "train_7_a_2.nii.gz", "valid_3_b_1.nii.gz"]
    for name in names:
        patient = "_".join(name.split("_")[:2])
        save(local / "volumes" / patient / f"{patient}_{name.split('_')[2]}" / name, ct.hu.astype("int16"), ct.affine)
        save(local / "labels" / name, ct.labels.astype("int16"), ct.affine)
    (local / "metadata.csv").write_text("VolumeName,XYSpacing\n" + "".join(f"{n},0.7\n" for n in names))
    upload(local, f"{memory}/CT-RATE")
    pairs = tmp_path / "pairs.csv"
    argv = ["--metadata", f"{memory}/CT-RATE/metadata.csv", "--volumes", f"{memory}/CT-RATE/volumes",
            "--labels", f"{memory}/CT-RATE/labels", "--out", str(pairs)]  # fmt: skip
    assert ct_rate_main(argv) == 0
    label_names = tmp_path / "names.json"  # the phantom's own ids (a real CT-RATE map: --label_names v2)
    label_names.write_text(__import__("json").dumps({str(k): v for k, v in ct.label_names.items()}))
    config = BuildConfig(source="pairs", pairs_csv=str(pairs), label_names=str(label_names),
                         output_dir=str(tmp_path / "out"), cache_dir=str(tmp_path / "cache"), **SMALL)  # fmt: skip
    summary = build(config)
    assert summary["built"] == 3, summary["failures"]
    shards = sorted(p.name for p in (tmp_path / "out" / "data").glob("*.parquet"))
    splits = {name.split("-", 1)[1].split(".")[0]: name.split("-", 1)[0] for name in shards}
    assert splits["valid_3_b_1"] == "test" and splits["train_7_a_1"] == splits["train_7_a_2"] != "test"


def test_ct_rate_odd_volume_name_is_a_one_line_error(memory, tmp_path, capsys):
    from dataset_builder.ct_rate import main as ct_rate_main

    fsspec.filesystem("memory").pipe_file(f"{memory}/m.csv".removeprefix("memory://"), b"VolumeName\nscan1.nii.gz\n")
    argv = ["--metadata", f"{memory}/m.csv", "--volumes", "v", "--labels", "l", "--out", str(tmp_path / "p.csv")]
    assert ct_rate_main(argv) == 2
    assert "not a CT-RATE volume name" in capsys.readouterr().err and not (tmp_path / "p.csv").exists()
