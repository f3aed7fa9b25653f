"""The bundled models on two real radiographs (chexanatomy/assets/real_cxr; no reference masks, so no Dice):
the anatomy must at least be plausible, where a user looks first."""

import importlib.resources

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from chexanatomy.inference import load_segmenter
from tests.conftest import centroid_yx

REAL = ("00000001_000.png", "00027426_000.png")
LUNGS = ("lung_field_left", "lung_field_right")


def real_image(name: str) -> Image.Image:
    with importlib.resources.as_file(importlib.resources.files("chexanatomy") / "assets" / "real_cxr" / name) as p:
        return Image.open(p).convert("L")


@pytest.fixture(scope="module")
def unet():
    return load_segmenter("bundled-unet", device="cpu")


@pytest.fixture(scope="module")
def vlm():
    return load_segmenter("bundled-vlm", device="cpu")


def main_component_share(mask: np.ndarray) -> float:
    """Share of the mask's pixels in its largest 8-connected component (1.0 = one region)."""
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    return float(np.bincount(labels.ravel())[1:].max() / mask.sum()) if n else 0.0


@pytest.mark.parametrize("name", REAL)
def test_unet_finds_two_lungs_on_their_sides_with_the_heart_between(unet, name):
    image = real_image(name)
    assert set(LUNGS) <= set(unet.structures)
    predictions = unet.segment(image, [*LUNGS, "heart"])
    left, right, heart = (predictions[n].mask for n in (*LUNGS, "heart"))
    width = image.width
    for lung in (left, right):
        assert 0.10 <= lung.mean() <= 0.35, f"lung covers {lung.mean():.1%} of the image"
        assert main_component_share(lung) >= 0.9
    assert centroid_yx(left)[1] > width / 2 > centroid_yx(right)[1]  # patient's left on the image right
    assert heart.any()
    assert centroid_yx(right)[1] < centroid_yx(heart)[1] < centroid_yx(left)[1]
    assert (left & right).sum() == 0


@pytest.mark.parametrize("name", REAL)
def test_vlm_answers_for_lungs_and_heart_are_valid(vlm, name):
    predictions = vlm.segment(real_image(name), [*LUNGS, "lung_left", "lung_right", "heart"])
    invalid = [n for n, p in predictions.items() if not p.valid]
    assert not invalid, f"invalid answers for {invalid}: {[predictions[n].answer for n in invalid]}"
    width = real_image(name).width
    assert centroid_yx(predictions["lung_field_left"].mask)[1] > width / 2
    assert centroid_yx(predictions["lung_field_right"].mask)[1] < width / 2
