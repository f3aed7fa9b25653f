"""--engine ray on a local Ray runtime: the same bytes as one process, failures recorded, workers killed survived."""

import functools
import hashlib
import json
import os
import signal
import sys
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from dataset_builder.build import BuildConfig, build  # noqa: E402
from dataset_builder.ray_engine import start_local  # noqa: E402
from dataset_builder.sources import Subject, pseudo_subjects  # noqa: E402

SMALL = dict(size_px=48, poses_per_view=1, views=["PA"], codec="none")
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the test's loaders travel to Ray's workers


def digest(folder: Path) -> dict[str, str]:
    """Every file of a corpus folder (shards, card, example, config, failures) -> SHA-256; locks left out."""
    files = [p for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.endswith(".lock")]
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture(scope="module")
def local_ray():
    start_local(num_cpus=2, object_store_memory=200 * 1024**2)
    yield
    ray.shutdown()


def test_phantom_corpus_is_byte_identical_to_one_process(local_ray, tmp_path):
    cfg = dict(source="phantom", num_subjects=3, size_px=48, poses_per_view=2, views=["PA", "LAT"])
    one = build(BuildConfig(output_dir=str(tmp_path / "one"), **cfg))
    with_ray = build(BuildConfig(output_dir=str(tmp_path / "ray"), engine="ray", **cfg))
    assert one["built"] == with_ray["built"] == 3
    assert digest(tmp_path / "one") == digest(tmp_path / "ray")
    assert set(with_ray["cts_per_hour"]) == {"wall", "read", "render", "write"}
    again = build(BuildConfig(output_dir=str(tmp_path / "ray"), engine="ray", **cfg))  # resumable
    assert again["resumed_skipped"] == 3 and again["built"] == 0


def test_totalsegmentator_with_a_truncated_subject_matches_one_process(local_ray, tmp_path):
    from test_sources import write_totalseg_subject

    from dataset_builder.phantom import make_thorax_phantom

    ct = make_thorax_phantom(shape=(48, 40, 36), spacing_mm=(8.0, 8.0, 10.0))
    root = tmp_path / "ts"
    for name in ("s_good1", "s_good2", "s_trunc"):
        write_totalseg_subject(root / name, ct)
    data = (root / "s_trunc" / "ct.nii.gz").read_bytes()
    (root / "s_trunc" / "ct.nii.gz").write_bytes(data[: len(data) // 3])
    cfg = dict(source="totalsegmentator", root=str(root), **SMALL)
    one = build(BuildConfig(output_dir=str(tmp_path / "one"), **cfg))
    with_ray = build(BuildConfig(output_dir=str(tmp_path / "ray"), engine="ray", **cfg))
    assert one["built"] == with_ray["built"] == 2 and with_ray["failed"] == 1
    assert [f["subject_id"] for f in with_ray["failures"]] == ["s_trunc"]
    assert digest(tmp_path / "one") == digest(tmp_path / "ray")


def kill_own_worker():
    os.kill(os.getpid(), signal.SIGKILL)


def killed_once(marker: str, load):
    """Kill this worker the first time (leaving ``marker``), load normally the second."""
    if not os.path.exists(marker):
        Path(marker).write_text(str(os.getpid()))
        kill_own_worker()
    return load()


@pytest.mark.cluster  # restarting killed workers takes half a minute: run once by scripts/test.sh
def test_a_worker_killed_once_is_retried_and_one_killed_twice_is_recorded(local_ray, tmp_path, monkeypatch):
    first, second = pseudo_subjects("phantom", 2, 0, 1.0)
    subjects = [
        first,
        Subject(second.subject_id, functools.partial(killed_once, str(tmp_path / "marker"), second.load)),
        Subject("always_killed", kill_own_worker),
    ]
    monkeypatch.setattr("dataset_builder.build.list_subjects", lambda config: subjects)
    summary = build(BuildConfig(source="phantom", output_dir=str(tmp_path / "c"), engine="ray", **SMALL))
    assert summary["built"] == 2 and (tmp_path / "marker").exists()
    failures = [json.loads(line) for line in (tmp_path / "c" / "failures.jsonl").read_text().splitlines()]
    assert [f["subject_id"] for f in failures] == ["always_killed"]
    assert "died in both attempts" in failures[0]["reason"]


def test_render_tasks_share_a_gpu_and_use_a_cpu_without_one():
    """On a cluster with GPUs several render tasks share each (their CPU work overlaps); without, each takes a CPU."""
    from dataset_builder.ray_engine import RENDERS_PER_GPU, _render_placement

    shared = {"num_cpus": 1, "num_gpus": 1 / RENDERS_PER_GPU}
    assert _render_placement("auto", {"CPU": 16, "GPU": 1}) == ("cuda", shared)
    assert RENDERS_PER_GPU > 1
    assert _render_placement("auto", {"CPU": 16}) == ("cpu", {"num_cpus": 1})
    with pytest.raises(ValueError, match="no GPU"):
        _render_placement("cuda", {"CPU": 16})
