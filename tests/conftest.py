import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from dataset_builder.phantom import make_thorax_phantom  # noqa: E402
from dataset_builder.render import RenderSettings, render_subject  # noqa: E402


@pytest.fixture(scope="session")
def phantom():
    return make_thorax_phantom()


@pytest.fixture(scope="session")
def phantom_views(phantom):
    """Standard-position PA, AP and lateral views of the phantom at 96 px, default appearance."""
    settings = RenderSettings(size_px=96, views=("PA", "AP", "LAT"), poses_per_view=1, randomize=False)
    return {v.geometry.view: v for v in render_subject(phantom, settings)}


def centroid_yx(mask: np.ndarray) -> np.ndarray:
    """(row, col) centroid of a bool mask."""
    return np.argwhere(mask).mean(0)


@pytest.fixture
def fake_hub(monkeypatch):
    """``huggingface_hub.HfApi`` replaced by a recorder (nothing is uploaded); returns the list of calls made:
    ``("create_repo", repo_id, private)`` and ``("upload_folder", repo_id, sorted top-level names uploaded)``."""
    import huggingface_hub

    calls = []

    class FakeHub:
        def __init__(self, *args, **kwargs):
            pass

        def create_repo(self, repo_id, private=False, **kwargs):
            calls.append(("create_repo", repo_id, private))

        def upload_folder(self, repo_id, folder_path, **kwargs):
            from pathlib import Path

            calls.append(("upload_folder", repo_id, sorted(p.name for p in Path(folder_path).iterdir())))
            return f"https://huggingface.co/{repo_id}/commit/0"

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHub)
    return calls


@pytest.fixture(scope="session")
def phantom_corpus(tmp_path_factory):
    """A built corpus: 3 phantom subjects, PA only, one pose, 64 px, with token targets (read it, never write)."""
    from dataset_builder.build import BuildConfig, build

    out = tmp_path_factory.mktemp("phantom_corpus")
    small = dict(num_subjects=3, size_px=64, poses_per_view=1, views=["PA"])
    build(BuildConfig(source="phantom", output_dir=str(out), **small))
    return out


@pytest.fixture(scope="session")
def phantom_rows(phantom_corpus):
    """The train split of ``phantom_corpus`` as a ``datasets.Dataset``."""
    import datasets

    return datasets.load_dataset(str(phantom_corpus), cache_dir=str(phantom_corpus.parent / "hf"))["train"]
