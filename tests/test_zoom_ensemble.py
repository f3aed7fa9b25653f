"""Test-time zooms (chexanatomy.inference.ZoomEnsemble): masks come back where the anatomy is, and are voted."""

import numpy as np
import pytest
from PIL import Image

from chexanatomy.inference import Prediction, ZoomEnsemble, restored, zoomed_out
from chexanatomy.masks import dice


class Bright:
    """A stand-in segmenter: the 'lung' is every pixel brighter than 128; answers are invalid when told so."""

    kind, structures = "unet", ["lung_left", "lung_right"]

    def __init__(self, invalid_calls=()):
        self.calls, self.invalid_calls = 0, set(invalid_calls)

    def segment(self, image, structures=None):
        valid = self.calls not in self.invalid_calls
        self.calls += 1
        mask = (np.asarray(image) > 128) & valid
        return {n: Prediction(n, mask, None, valid, f"call {self.calls}") for n in structures or self.structures}


def _radiograph() -> Image.Image:
    """A 200 x 160 (H x W) image with one bright rectangle on the image's right (the patient's left)."""
    pixels = np.zeros((200, 160), np.uint8)
    pixels[40:150, 95:140] = 255
    return Image.fromarray(pixels)


def test_a_zoomed_out_copy_shows_the_image_smaller_about_its_centre():
    image = _radiograph()
    small = np.asarray(zoomed_out(image, 0.5))
    assert small.shape == (200, 160)
    rows, cols = np.nonzero(small > 128)
    # the rectangle's edges move halfway to the centre (100, 80): rows 40-150 -> 70-125, columns 95-140 -> 87-110
    assert abs(rows.min() - 70) <= 1 and abs(rows.max() - 124) <= 1
    assert abs(cols.min() - 87) <= 1 and abs(cols.max() - 109) <= 1
    assert small[:50].max() == 0 and small[:, :40].max() == 0  # black canvas around it


@pytest.mark.parametrize("zoom", [1.0, 0.9, 0.8, 0.55])
def test_masks_of_a_zoomed_out_copy_come_back_on_the_same_side_and_place(zoom):
    image = _radiograph()
    truth = np.asarray(image) > 128
    back = restored(np.asarray(zoomed_out(image, zoom)) > 128, zoom) > 0.5
    assert back.shape == truth.shape and dice(back, truth) > 0.95
    assert np.nonzero(back)[1].mean() > 80  # still on the image's right: the patient's left


def test_the_ensemble_votes_over_valid_answers_only():
    image = _radiograph()
    truth = np.asarray(image) > 128
    ensemble = ZoomEnsemble(Bright(invalid_calls={1}), (1.0, 0.9, 0.8))
    predictions = ensemble.segment(image, ["lung_left"])
    left = predictions["lung_left"]
    assert left.valid and dice(left.mask, truth) > 0.95 and left.answer == "call 1"
    assert left.box == (40, 95, 150, 140)
    assert ensemble.kind == "unet" and ensemble.structures == ["lung_left", "lung_right"]
    nothing = ZoomEnsemble(Bright(invalid_calls={0, 1}), (1.0, 0.8)).segment(image)
    assert set(nothing) == {"lung_left", "lung_right"} and not nothing["lung_right"].valid


def test_a_pixel_needs_more_than_half_of_the_votes():
    class Shifting(Bright):
        def segment(self, image, structures=None):  # masks of one call: a third of the image each, overlapping
            self.calls += 1
            mask = np.zeros((90, 90), bool)
            mask[:, (self.calls - 1) * 20 : (self.calls - 1) * 20 + 50] = True
            return {"heart": Prediction("heart", mask, None, True, "")}

    voted = ZoomEnsemble(Shifting(), (1.0, 1.0, 1.0)).segment(Image.new("L", (90, 90)))["heart"].mask
    assert voted[0].tolist() == [20 <= c < 70 for c in range(90)]  # columns in at least two of the three masks


@pytest.mark.parametrize("zooms", [(), (0.0,), (1.2,), (1.0, -0.5)])
def test_zooms_outside_zero_to_one_are_refused(zooms):
    with pytest.raises(ValueError, match="zooms"):
        ZoomEnsemble(Bright(), zooms)
    from eval.__main__ import EvalConfig

    with pytest.raises(ValueError, match="real_zooms"):
        EvalConfig(real_zooms=list(zooms))
