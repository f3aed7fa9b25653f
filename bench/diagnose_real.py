"""Where a model's lung fields go wrong on real radiographs: each box edge's bias, and boxes against shapes.

For every lung of the real sets given (Montgomery masks are per side; a Shenzhen "lungs" mask is split into its two
largest regions, the one on the image's left being the patient's right lung), the model is asked for that side's
lung field and compared with the reference:

* **edge bias**: each edge of the answer's box (y0, x0, y1, x1) minus the reference's tight box, in per cent of the
  image's height (rows) or width (columns): signed mean (positive: lower / further right) and mean absolute. For a
  U-Net, the tight box of its mask.
* **boxes against shapes** (VLM only; Dice per lung, largest region kept, as the evaluation): the answer as it is;
  its own 16 codes drawn in the reference's box; the reference's codes (the codec's encoding of the reference mask)
  drawn in its box; the reference's codes in the reference's box (the codec's round trip, the ceiling).

    python bench/diagnose_real.py chexanatomy/assets/models/tiny_vlm \
        --montgomery ../shared/real_cxr_val/montgomery --shenzhen ../shared/real_cxr_val/shenzhen

Prints one table per set and writes them to ``--output`` (JSON, default ``bench/results/diagnose_real.json``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import checkout  # noqa: F401  (puts the checkout on sys.path)
import numpy as np
from score_checkpoints import add_real_set_options, real_sets

from chexanatomy.inference import grey_image, load_segmenter
from chexanatomy.mask_tokens import answer_locs, loc_values_to_box
from chexanatomy.masks import dice, tight_box
from chexanatomy.regions import largest_component

EDGES = ("y0", "x0", "y1", "x1")
LOC_TEXT = 4 * len("<loc0000>")  # the characters of an answer's box
SHAPES = ("answer", "own codes in reference box", "reference codes in own box", "codec round trip")


def lungs_of(masks: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``{"lung_left", "lung_right"}`` reference masks of a record (a both-lungs mask split by position)."""
    if "lung_left" in masks and "lung_right" in masks:
        return {side: masks[side] for side in ("lung_left", "lung_right")}
    first = largest_component(masks["lungs"])
    second = largest_component(masks["lungs"] & ~first)
    image_left, image_right = sorted((first, second), key=lambda m: np.argwhere(m)[:, 1].mean())
    return {"lung_right": image_left, "lung_left": image_right}  # radiological convention


def edge_errors(box, reference: np.ndarray) -> np.ndarray:
    """[4] signed edge errors of ``box`` (y0, x0, y1, x1 pixels) against ``reference``'s tight box, % of the side."""
    height, width = reference.shape
    return (np.asarray(box, float) - np.asarray(tight_box(reference), float)) / [height, width, height, width] * 100


def shape_dice(segmenter, answer: str, reference: np.ndarray) -> list[float]:
    """Dice of the answer, and of its codes / the reference's codes in either box (``SHAPES``' order).

    The reference's answer is the model's codec encoding the reference mask in its tight box; boxes and codes are
    swapped as text (the four ``<loc>`` tokens lead every contract answer), then decoded as any answer.
    """
    size = reference.shape
    if len(answer_locs(answer)) != 4 or not answer.startswith("<loc"):
        return [0.0, 0.0, float("nan"), float("nan")]
    truth = segmenter.tokenizer.encode(reference[None], ["lung"])[0]
    texts = (answer, truth[:LOC_TEXT] + answer[LOC_TEXT:], answer[:LOC_TEXT] + truth[LOC_TEXT:], truth)
    decoded = segmenter.tokenizer.decode_batch(texts, [size] * len(texts))
    return [dice(largest_component(objects[0].mask), reference) if objects[0].valid else 0.0 for objects in decoded]


def diagnose(segmenter, records) -> dict:
    """``{"edges": {"signed", "absolute"}, "shapes": {name: mean Dice}, "lungs": n}`` over the records' lungs."""
    errors, shapes = [], []
    for record in records:
        image = grey_image(record["image"])
        lungs = lungs_of(record["masks"])
        fields = {side: side.replace("lung_", "lung_field_") for side in lungs}
        predictions = segmenter.segment(image, list(fields.values()))
        for side, reference in lungs.items():
            prediction = predictions[fields[side]]
            box = loc_values_to_box(answer_locs(prediction.answer), reference.shape) if prediction.answer else None
            box = box or prediction.box
            if box is not None:
                errors.append(edge_errors(box, reference))
            if segmenter.kind == "vlm":
                shapes.append(shape_dice(segmenter, prediction.answer, reference))
    signed, absolute = np.mean(errors, 0).round(1).tolist(), np.abs(errors).mean(0).round(1).tolist()
    out = {"lungs": len(errors), "edges": {"signed": dict(zip(EDGES, signed, strict=True)),
                                           "absolute": dict(zip(EDGES, absolute, strict=True))}}  # fmt: skip
    if shapes:
        out["shapes"] = dict(zip(SHAPES, np.nanmean(shapes, 0).round(3).tolist(), strict=True))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="A model folder (VLM or U-Net) or bundled-vlm / bundled-unet.")
    add_real_set_options(parser)
    parser.add_argument("--output", default="bench/results/diagnose_real.json")
    args = parser.parse_args()
    sets = real_sets(parser, args)
    segmenter = load_segmenter(args.model, local_only=True)
    results = {"model": args.model, "sets": {}}
    for name, records in sets.items():
        results["sets"][name] = found = diagnose(segmenter, records)
        edges = found["edges"]
        print(f"{name} ({found['lungs']} lungs), box edge - reference, % of the side (signed / absolute): "
              + ", ".join(f"{e} {edges['signed'][e]:+.1f} / {edges['absolute'][e]:.1f}" for e in EDGES))  # fmt: skip
        for shape, value in found.get("shapes", {}).items():
            print(f"  Dice, {shape}: {value:.3f}")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
