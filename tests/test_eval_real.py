"""Scores on real radiographs (``eval.real_eval``): lung-field Dice, box IoU and the box statistics of the answers."""

import numpy as np
from PIL import Image

from chexanatomy.inference import Prediction
from chexanatomy.mask_tokens import encode_box
from chexanatomy.masks import tight_box
from eval.real_eval import evaluate_on_real

SIZE = (100, 100)
# In the image, the patient's right lung is on the left. Its box starts at row 20 and column 20: x0 == y0.
RIGHT, LEFT = np.zeros(SIZE, bool), np.zeros(SIZE, bool)
RIGHT[20:80, 20:45] = True
LEFT[20:80, 55:90] = True


class LungFieldVLM:
    """A VLM stand-in that answers each lung field exactly, with the `<loc>` answer a VLM would write for it."""

    kind, constrained = "vlm", True
    structures = ["lung_field_left", "lung_field_right", "lung_left", "lung_right", "heart"]

    def segment(self, image, structures=None):
        masks = {"lung_field_left": LEFT, "lung_field_right": RIGHT}
        out = {}
        for name in structures:
            mask = masks[name]
            answer = encode_box(tight_box(mask), SIZE) + "<seg000>" * 16 + " " + name.replace("_", " ")
            out[name] = Prediction(name, mask, tight_box(mask), True, answer)
        return out


def test_real_entries_report_lung_field_dice_box_iou_and_the_x0_equals_y0_rate_of_answers_and_references():
    image = Image.new("L", SIZE[::-1])
    montgomery = [{"id": "m1", "image": image, "masks": {"lung_left": LEFT, "lung_right": RIGHT}}]
    shenzhen = [{"id": "s1", "image": image, "masks": {"lungs": LEFT | RIGHT}}]

    per_side = evaluate_on_real(LungFieldVLM(), montgomery, "vlm", {"id": "montgomery", "name": "Montgomery"})
    both = evaluate_on_real(LungFieldVLM(), shenzhen, "vlm", {"id": "shenzhen", "name": "Shenzhen"})

    for entry in (per_side, both):
        assert entry["summary"]["macro"]["dice"] == 1.0 and entry["summary"]["macro"]["box_iou"] == 1.0
        assert entry["summary"]["x0_eq_y0_rate"] == 0.5 and entry["summary"]["x0_eq_y0_answers"] == 2  # both fields
        assert entry["dataset"]["lung_definition"] == "scr"
    assert set(per_side["per_structure"]) == {"lung_left", "lung_right"} and set(both["per_structure"]) == {"lungs"}
    assert per_side["summary"]["reference_x0_eq_y0_rate"] == 0.5  # the right lung's box, not the left's
    assert both["summary"]["reference_x0_eq_y0_rate"] == 1.0  # both lungs as one box starts at (20, 20)
