"""Private internals of pinned libraries that the project relies on: these tests fail loudly when they change.

* gradio: the Space replaces ``gradio.processing_utils.save_pil_to_cache`` (``space.ui.atomic_save_pil_to_cache``;
  Gradio 6 rewrites an output file in place, truncating downloads under load). No public API writes a component's
  images, so gradio is pinned (``pyproject.toml`` ``space`` extra, the Space's ``sdk_version``) and this checks that
  the pinned gradio still writes ``AnnotatedImage`` outputs through that function, with that signature.
* transformers: none. Whether ``generate`` takes pre-computed image features is read from the public ``forward``
  signature (``chexanatomy.inference.accepts_image_features``; ``tests/test_eval_run.py`` fails without it).
"""

import inspect
import tomllib
from pathlib import Path

import gradio
import numpy as np
from gradio import processing_utils
from huggingface_hub import SpaceCard
from packaging.requirements import Requirement

from space.ui import atomic_save_pil_to_cache

ROOT = Path(__file__).resolve().parents[1]


def test_gradio_is_the_pinned_version_everywhere():
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["space"]
    pin = next(Requirement(r) for r in extra if Requirement(r).name == "gradio")
    assert str(pin.specifier) == f"=={gradio.__version__}", "gradio changed: re-check space.ui's replacement"
    assert SpaceCard.load(ROOT / "space" / "README.md").data.sdk_version == gradio.__version__


def test_gradio_writes_annotated_images_through_the_function_the_space_replaces(monkeypatch, tmp_path):
    original = processing_utils.save_pil_to_cache
    assert list(inspect.signature(original).parameters) == list(inspect.signature(atomic_save_pil_to_cache).parameters)
    written = []

    def recording(img, cache_dir, name="image", format="webp"):
        written.append(name)
        return atomic_save_pil_to_cache(img, str(tmp_path), name, format)

    monkeypatch.setattr(processing_utils, "save_pil_to_cache", recording)
    value = gradio.AnnotatedImage().postprocess((np.zeros((8, 8, 3), np.uint8), [(np.full((8, 8), 0.5), "heart")]))
    assert len(written) == 2  # the image and its one mask: both through the replaced function
    assert Path(value.image.path).parent.parent == tmp_path and len(value.annotations) == 1
