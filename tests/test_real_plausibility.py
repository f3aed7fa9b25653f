"""The bundled models on the two bundled real radiographs (no reference masks, so no Dice): the anatomy must at least
be plausible where a user looks first (checks: eval.plausibility)."""

import pytest

from chexanatomy.examples import real_radiographs
from chexanatomy.inference import load_segmenter
from eval.plausibility import check_image, plausibility_study, plausibility_table

IMAGES = real_radiographs()


@pytest.fixture(scope="module")
def unet():
    return load_segmenter("bundled-unet", device="cpu")


@pytest.fixture(scope="module")
def vlm():
    return load_segmenter("bundled-vlm", device="cpu")


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_unet_finds_two_lungs_on_their_sides_with_the_heart_between(unet, name):
    """Each lung field one main region on the correct side, 10-35 % of the image, the heart between them."""
    row = check_image(unet, IMAGES[name])
    assert row["lungs_asked"] == "lung_field_left, lung_field_right"
    assert row["passed"], row


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_vlm_finds_two_lungs_on_their_sides_with_the_heart_between(vlm, name):
    """The same checks for the VLM, with valid answers only (the Space shows these two images to every visitor)."""
    row = check_image(vlm, IMAGES[name])
    assert row["lungs_asked"] == "lung_field_left, lung_field_right"
    assert row["invalid_answers"] == [] and row["passed"], row


def test_the_study_reports_every_model_and_image(unet):
    study = plausibility_study({"unet": unet}, IMAGES)
    assert len(study["rows"]) == 2 and study["summary"]["images"] == 2
    assert plausibility_table(study).count("\n") == 3
