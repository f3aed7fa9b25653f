"""The corpus on disk: splits, determinism, resume, load_dataset round trip, card, Hub file set."""

import hashlib
import json
import shutil
from pathlib import Path

import datasets
import numpy as np
import pytest
from huggingface_hub import DatasetCard

from dataset_builder.build import BuildConfig, BuildError, build
from dataset_builder.card import build_card
from dataset_builder.corpus import FEATURES, FORMAT_VERSION, shard_bytes, split_of, to_row
from dataset_builder.hub import files_to_upload, push_corpus
from dataset_builder.render import RenderSettings, render_subject


def small_config(out: Path, **kw) -> BuildConfig:
    base = dict(source="phantom", output_dir=str(out), num_subjects=5, size_px=64, poses_per_view=2)
    return BuildConfig(**{**base, **kw})


def digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    summary = build(small_config(out))
    return out, summary


def test_build_writes_one_shard_per_subject_and_a_card(corpus):
    out, summary = corpus
    assert summary["built"] == 5 and summary["images"] == 5 * 2 * 2
    shards = sorted(p.name for p in (out / "data").glob("*.parquet"))
    assert len(shards) == 5
    assert {"README.md", "build_config.json", "example.png"} <= {p.name for p in out.iterdir()}


def test_load_dataset_round_trip_keeps_features(corpus):
    out, _ = corpus
    ds = datasets.load_dataset(str(out), cache_dir=str(out.parent / "hf_cache"))
    total = sum(len(split) for split in ds.values())
    assert total == 20
    split = next(iter(ds.values()))
    assert split.features == FEATURES
    row = split[0]
    assert row["image"].size == (64, 64) and row["image"].mode == "L"
    s = row["structures"][0]
    mask = np.asarray(s["mask"], dtype=bool)
    assert mask.shape == (64, 64) and mask.sum() == s["area_px"]
    y0, x0, y1, x1 = s["bbox"]
    rows, cols = np.nonzero(mask)
    assert (y0, x0, y1, x1) == (rows.min(), cols.min(), rows.max() + 1, cols.max() + 1)
    assert {"lung_left", "heart", "trachea"} <= {s["name"] for s in row["structures"]}


def test_splits_are_by_subject_and_follow_the_subject_id(corpus):
    out, _ = corpus
    ds = datasets.load_dataset(str(out), cache_dir=str(out.parent / "hf_cache"))
    seen = {}
    for split_name, split in ds.items():
        for sid in set(split["subject_id"]):
            assert sid not in seen, f"{sid} in {seen.get(sid)} and {split_name}"
            seen[sid] = split_name
            assert split_of(sid) == split_name
    assert len(seen) == 5


def test_split_of_is_stable_and_roughly_proportional():
    ids = [f"subject-{i}" for i in range(2000)]
    splits = [split_of(i) for i in ids]
    assert splits == [split_of(i) for i in ids]
    assert 0.75 < splits.count("train") / 2000 < 0.85
    with pytest.raises(ValueError, match="fractions"):
        split_of("x", (0.5, 0.6, 0.1))


def test_same_command_twice_gives_identical_files(corpus, tmp_path):
    out, _ = corpus
    build(small_config(tmp_path))
    assert digest(tmp_path) == digest(out)


def test_interrupted_build_resumes_to_the_same_files(corpus, tmp_path):
    out, _ = corpus
    build(small_config(tmp_path))
    victims = sorted((tmp_path / "data").glob("*.parquet"))[:2]
    for v in victims:
        v.unlink()  # as if the build had been killed before these subjects
    (tmp_path / "data" / ".train-x.parquet.tmp-123").write_bytes(b"partial")  # a killed writer's leftover
    summary = build(small_config(tmp_path))
    assert summary["built"] == 2 and summary["resumed_skipped"] == 3
    (tmp_path / "data" / ".train-x.parquet.tmp-123").unlink()
    assert digest(tmp_path) == digest(out)


def test_resume_with_different_settings_is_refused(corpus, tmp_path):
    build(small_config(tmp_path, num_subjects=1))
    with pytest.raises(BuildError, match="size_px"):
        build(small_config(tmp_path, num_subjects=1, size_px=96))


def test_card_yaml_parses_and_lists_the_shards(corpus):
    out, _ = corpus
    card = DatasetCard.load(out / "README.md")
    config = card.data.configs[0]
    assert config["config_name"] == "default"
    patterns = {d["split"]: d["path"] for d in config["data_files"]}
    for pattern in patterns.values():
        assert list(out.glob(pattern)), f"{pattern} matches no shard"
    assert "medical" in card.data.tags and card.data.license == "apache-2.0"  # a phantom: no patient's CT terms
    assert "lung_left" in card.text and "patient's right on the image" in card.text
    assert "ends at its costophrenic angle" in card.text and "narrower than 10% of the widest" in card.text


def test_card_metadata_follows_the_datasetcard_spec(corpus):
    """Language, machine-generated annotations, source datasets, split sizes as load_dataset sees them, citation,
    and a first-structure example that is the corpus's own."""
    out, summary = corpus
    data = DatasetCard.load(out / "README.md").data.to_dict()
    assert data["language"] == ["en"] and data["annotations_creators"] == ["machine-generated"]
    assert data["source_datasets"] == ["original"]
    rows = datasets.load_dataset(str(out), cache_dir=str(out.parent / "hf_card"))
    sizes = {s["name"]: s["num_examples"] for s in data["dataset_info"]["splits"]}
    assert sizes == {split: len(split_rows) for split, split_rows in rows.items()}
    assert data["dataset_info"]["download_size"] == sum(p.stat().st_size for p in (out / "data").glob("*.parquet"))
    text = (out / "README.md").read_text()
    first = rows["train"][0]["structures"][0]
    assert f"`{first['name']}`: `{first['segment_target'] or first['detect_target']}`" in text
    assert "## Citation" in text and "@misc{gatidis2026chexanatomy" in text and "## Licence" in text


@pytest.mark.parametrize("source", ["embedded", "totalsegmentator", "pairs"])
def test_a_corpus_of_real_cts_links_the_terms_of_its_source(corpus, source):
    out, _ = corpus
    config = {**json.loads((out / "build_config.json").read_text()), "source": source}
    data = build_card(out, config, ["provenance"], "me/drr").data.to_dict()
    assert data["license_link"].startswith(("https://", "README.md#"))
    assert data["source_datasets"][0].startswith("extended")
    assert (data["license"] == "other") == ("license_name" in data)


def test_invalid_config_names_the_field():
    with pytest.raises(ValueError, match="views"):
        BuildConfig(views=["PA", "OBLIQUE"])
    with pytest.raises(ValueError, match="size_px"):
        BuildConfig(size_px=4096)


def test_hub_upload_sends_exactly_the_corpus_files(corpus):
    out, _ = corpus
    expected = ["README.md", "build_config.json", "example.png"] + sorted(
        f"data/{p.name}" for p in (out / "data").glob("*.parquet")
    )
    assert files_to_upload(out) == expected

    class FakeApi:
        def __init__(self):
            self.calls = []

        def create_repo(self, repo_id, **kw):
            self.calls.append(("create_repo", repo_id, kw["repo_type"]))

        def upload_folder(self, **kw):
            uploaded = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and any(
                p.relative_to(out).match(pat) for pat in kw["allow_patterns"]))
            self.calls.append(("upload_folder", kw["repo_id"], uploaded))
            return "https://huggingface.co/datasets/chexanatomy/drr/commit/abc"

        def create_tag(self, repo_id, tag, **kw):
            self.calls.append(("create_tag", repo_id, tag))

    api = FakeApi()
    push_corpus(out, "chexanatomy/drr", api=api)
    assert api.calls[0] == ("create_repo", "chexanatomy/drr", "dataset")
    assert api.calls[1][2] == sorted(expected)
    assert api.calls[2] == ("create_tag", "chexanatomy/drr", f"v{FORMAT_VERSION}")


def test_load_dataset_of_a_built_corpus_warns_nothing(corpus, tmp_path):
    """The card's ``dataset_info`` is what ``push_to_hub`` writes (``num_bytes`` per split, ``dataset_size``), so
    ``load_dataset`` takes it as it is instead of printing "Ignoring part of dataset_info from the dataset card"."""
    import logging
    import warnings

    out, _ = corpus
    records = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger = logging.getLogger("datasets")
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            rows = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "hf"))
    finally:
        logger.removeHandler(handler)
    assert [r.getMessage() for r in records] == [] and [str(w.message) for w in caught] == []
    info = DatasetCard.load(out / "README.md").data.to_dict()["dataset_info"]
    sizes = {s["name"]: s["num_bytes"] for s in info["splits"]}
    assert set(sizes) == set(rows) and all(n > 0 for n in sizes.values())
    assert info["dataset_size"] == sum(sizes.values())
    for split, split_rows in rows.items():  # push_to_hub's num_bytes: the split's Arrow size
        assert abs(sizes[split] - split_rows.data.nbytes) <= 0.01 * sizes[split], split


def test_the_hub_dataset_gets_the_card_config_example_and_shards_and_none_of_the_builds_internals(corpus, tmp_path):
    """Against a fake Hub that selects files as ``upload_folder`` does: locks, failure logs and strays stay local."""
    from huggingface_hub.utils import filter_repo_objects

    from dataset_builder.build import rewrite_card

    out = tmp_path / "corpus"
    shutil.copytree(corpus[0], out)
    (out / "failures.jsonl").write_text(json.dumps({"subject_id": "s9", "reason": "/home/me/ct/s9.nii.gz: truncated"}))
    (out / "failures-1-of-2.jsonl").write_text("")
    (out / "notes.txt").write_text("mine")
    (out / "data" / ".part-000.parquet.tmp").write_bytes(b"half")
    rewrite_card(str(out))
    assert {".build.lock", ".build_config.lock"} <= {p.name for p in out.iterdir()}

    class FakeApi:
        def create_repo(self, *args, **kwargs):
            pass

        def upload_folder(self, folder_path, allow_patterns=None, ignore_patterns=None, **kwargs):
            local = sorted(p.relative_to(folder_path).as_posix() for p in Path(folder_path).rglob("*") if p.is_file())
            self.sent = sorted(filter_repo_objects(local, allow_patterns=allow_patterns,
                                                   ignore_patterns=ignore_patterns))  # fmt: skip
            return "https://huggingface.co/datasets/me/drr/commit/0"

        def create_tag(self, *args, **kwargs):
            pass

    api = FakeApi()
    push_corpus(out, "me/drr", api=api)
    shards = sorted(f"data/{p.name}" for p in (out / "data").glob("*.parquet"))
    assert api.sent == sorted(["README.md", "build_config.json", "example.png", *shards])
    assert api.sent == sorted(files_to_upload(out))
    push_corpus(out, "me/drr", api=api, shards=False)  # the card after a build that pushed its shards as it went
    assert api.sent == ["README.md", "build_config.json", "example.png"] == files_to_upload(out, shards=False)
    card = (out / "README.md").read_text()
    assert "1 subject(s) could not be used" in card and "not published" in card  # no link to a file the repo lacks


def test_rendering_a_ct_in_one_batch_writes_the_same_shard_as_one_view_at_a_time(phantom):
    """Every pose of PA and lateral through the projector at once (poses, framing, physics, processing all drawn):
    the same images, masks and shard bytes as rendering each view alone."""
    settings = RenderSettings(size_px=48, views=("PA", "LAT"), poses_per_view=2)
    batched = render_subject(phantom, settings)
    alone = render_subject(phantom, settings, batch=False)
    for a, b in zip(batched, alone, strict=True):
        assert np.array_equal(a.image, b.image)
        assert a.masks.keys() == b.masks.keys() and all(np.array_equal(a.masks[k], b.masks[k]) for k in a.masks)
    assert batched[1].pose != batched[0].pose  # random poses: the batch really mixes slab thicknesses
    shards = [shard_bytes([to_row(v, "phantom-ps000", "phantom", 1.5) for v in views]) for views in (batched, alone)]
    assert shards[0] == shards[1]
