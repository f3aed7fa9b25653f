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


def test_the_vlm_answers_in_bfloat16_as_in_float32(vlm):
    """On a GPU ``load_segmenter`` (and a Hub user's ``dtype=torch.bfloat16``) runs the VLM in bfloat16: its masks must
    be the ones float32 gives. A projector with a huge weight along the direction its LayerNorm'd input never has
    (``train.vision_pretrain.condition_projector``) made bfloat16 answers ignore the image: agreement 0.05-0.49."""
    import copy

    import numpy as np
    import torch

    from chexanatomy.masks import dice

    names = ["lung_field_right", "lung_field_left", "heart"]
    half = copy.copy(vlm)
    half.model = copy.deepcopy(vlm.model).to(torch.bfloat16)
    agreement = []
    for image in IMAGES.values():
        full, low = vlm.segment(image, names), half.segment(image, names)
        agreement += [dice(full[n].mask, low[n].mask) for n in names]
    assert np.mean(agreement) > 0.85 and min(agreement) > 0.6, agreement
