"""The <seg> codes' shape loss (train.seg_shape) and the expected-code decoding of VLMSegmenter (seg_decoding)."""

import json
import re

import numpy as np
import pytest
import torch

from chexanatomy.codec import load_codec
from chexanatomy.finetune import answer_only_loss
from chexanatomy.inference import load_segmenter
from chexanatomy.mask_tokens import box_pixel_edges, crop_masks, loc_values_to_box
from train.seg_shape import SegShapeLoss
from train.tiny_paligemma import TinySpec, build_model, build_processor

SPEC = TinySpec(image_size=64, vision_layers=1, text_layers=1, hidden=64, heads=2)


@pytest.fixture(scope="module")
def processor():
    return build_processor(SPEC)


@pytest.fixture(scope="module")
def codec():
    return load_codec()


def _ids(processor, kind: str, values) -> list[int]:
    digits = 4 if kind == "loc" else 3
    return processor.tokenizer.convert_tokens_to_ids([f"<{kind}{v:0{digits}d}>" for v in values])


def _codes_of(codec, mask: np.ndarray) -> list[int]:
    """The 16 codes of a whole-image mask (its own box: the whole 64x64 crop)."""
    return codec.encode_indices(crop_masks(mask[None], np.array([[0, 0, 64, 64]]))).tolist()[0]


def _ellipse(radius_rows: float, radius_cols: float) -> np.ndarray:
    rows, cols = np.mgrid[:64, :64]
    return ((rows - 32) / radius_rows) ** 2 + ((cols - 32) / radius_cols) ** 2 <= 1


def test_one_hot_distributions_draw_what_the_codes_draw(codec):
    indices = torch.randint(0, 128, (3, 16), generator=torch.Generator().manual_seed(0))
    one_hot = torch.nn.functional.one_hot(indices, 128).float()
    assert torch.allclose(codec.decode_distributions(one_hot), codec.decode_indices(indices), atol=1e-4)
    with pytest.raises(ValueError, match=r"\[B, 16, 128\]"):
        codec.decode_distributions(one_hot[:, :8])


def test_each_objects_sixteen_codes_are_grouped_and_a_cut_answer_is_left_out(processor, codec):
    loss = SegShapeLoss(codec, processor.tokenizer, 1.0)
    name = processor.tokenizer("heart", add_special_tokens=False)["input_ids"]
    first = _ids(processor, "loc", [1, 2, 3, 4]) + _ids(processor, "seg", range(16)) + name
    second = _ids(processor, "loc", [5, 6, 7, 8]) + _ids(processor, "seg", range(16, 32)) + [1]
    cut = _ids(processor, "loc", [1, 2, 3, 4]) + _ids(processor, "seg", range(7))
    targets = torch.tensor(first + second + [-100, -100] + cut)  # padding of a shorter row: unlabelled
    groups = loss.code_groups(targets)
    start = len(first) + 4
    assert groups.tolist() == [list(range(4, 20)), list(range(start, start + 16))]
    assert loss.code_groups(torch.tensor(_ids(processor, "loc", [1, 2, 3, 4]))).shape == (0, 16)


def test_the_shape_loss_tells_a_near_miss_from_a_wrong_shape_where_cross_entropy_cannot(processor, codec):
    """Logits all on the reference's codes cost least, on a slightly wider shape's codes little more, on an empty
    mask's codes most; cross-entropy puts the near miss and the empty mask level. Gradients reach the logits only."""
    loss = SegShapeLoss(codec, processor.tokenizer, 1.0)
    reference, near, blank = _ellipse(24, 14), _ellipse(25, 16), np.zeros((64, 64), bool)
    target_ids = torch.tensor(_ids(processor, "seg", _codes_of(codec, reference)))
    vocabulary = len(processor.tokenizer)
    shape, ce = {}, {}
    for label, mask in (("reference", reference), ("near", near), ("blank", blank)):
        logits = torch.full((16, vocabulary), -30.0)
        logits[torch.arange(16), torch.tensor(_ids(processor, "seg", _codes_of(codec, mask)))] = 30.0
        logits.requires_grad_(True)
        value = loss(logits, target_ids)
        value.backward()
        assert logits.grad.abs().sum() > 0 or label == "reference"
        shape[label] = float(value)
        ce[label] = float(torch.nn.functional.cross_entropy(logits, target_ids))
    assert shape["reference"] < shape["near"] < shape["blank"]
    assert shape["near"] < 0.5 * shape["blank"]
    assert ce["near"] > 0.5 * ce["blank"]  # most of the near miss's codes differ: cross-entropy sees them as wrong
    assert all(p.grad is None for p in codec.parameters())
    assert loss.mean_recent()["seg_shape_loss"] > 0 and loss.mean_recent() == {}
    with pytest.raises(ValueError, match="weight"):
        SegShapeLoss(codec, processor.tokenizer, 0.0)


def test_the_answer_loss_adds_the_weighted_shape_term(processor, codec):
    codes = _codes_of(codec, _ellipse(20, 12))
    answer = _ids(processor, "loc", [100, 200, 800, 500]) + _ids(processor, "seg", codes) + [1]
    labels = torch.full((1, len(answer) + 3), -100)
    labels[0, 3:] = torch.tensor(answer)
    logits = torch.randn(1, len(answer), len(processor.tokenizer), generator=torch.Generator().manual_seed(1))

    class Fixed(torch.nn.Module):
        def forward(self, logits_to_keep, **_):
            assert len(logits_to_keep) == len(answer)
            return type("Out", (), {"logits": logits})()

    batch = {"labels": labels, "input_ids": torch.zeros_like(labels)}
    plain = answer_only_loss(Fixed(), batch)
    shaped = answer_only_loss(Fixed(), batch, seg_shape=SegShapeLoss(codec, processor.tokenizer, 2.0))
    term = SegShapeLoss(codec, processor.tokenizer, 1.0)(logits[0], torch.tensor(answer))  # all kept positions labelled
    assert float(shaped) == pytest.approx(float(plain) + 2 * float(term), rel=1e-5)


@pytest.fixture(scope="module")
def vlm_folder(processor, tmp_path_factory):
    folder = tmp_path_factory.mktemp("vlm")
    build_model(processor, SPEC).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_expected_decoding_reads_the_same_answers_and_draws_inside_their_boxes(vlm_folder, phantom_rows):
    """The answer text is the argmax decoding's; the slot distributions are those the codes were chosen from (their
    argmax is the code generated); the masks lie inside the answers' boxes."""
    argmax = load_segmenter(vlm_folder, device="cpu")
    expected = load_segmenter(vlm_folder, device="cpu", seg_decoding="expected")
    image = phantom_rows[0]["image"]
    prompts = ["segment heart", "segment left lung", "segment right lung"]
    answers, slots = expected._answers(image.convert("L"), prompts, slots=True)
    assert answers == argmax.generate_answers(image.convert("L"), prompts)
    for answer, probabilities in zip(answers, slots, strict=True):
        assert probabilities.shape == (16, 128) and torch.allclose(probabilities.sum(-1), torch.ones(16))
        assert probabilities.argmax(-1).tolist() == [int(c) for c in re.findall(r"<seg(\d{3})>", answer)]
    predictions = expected.segment(image, ["heart", "lung_left", "lung_right"])
    size = (image.size[1], image.size[0])
    for prediction in predictions.values():
        assert prediction.valid and prediction.mask.shape == size
        locs = [int(v) for v in re.findall(r"<loc(\d{4})>", prediction.answer)]
        r0, c0, r1, c1 = box_pixel_edges(loc_values_to_box(locs, size), size)
        outside = prediction.mask.copy()
        outside[r0:r1, c0:c1] = False
        assert not outside.any()


@pytest.mark.parametrize(
    "options, message",
    [(dict(seg_decoding="soft"), "seg_decoding must be one of"),
     (dict(seg_decoding="expected", constrained=False), "constrained greedy"),
     (dict(seg_decoding="expected", num_beams=2), "constrained greedy")],
)  # fmt: skip
def test_expected_decoding_is_refused_where_the_slots_are_not_known(vlm_folder, options, message):
    with pytest.raises(ValueError, match=message):
        load_segmenter(vlm_folder, device="cpu", **options)


def test_the_card_names_the_stages_trained_with_the_shape_loss():
    from types import SimpleNamespace

    from model_card.recipe import seg_shape_rows

    stages = [SimpleNamespace(options={"anatomy": {"loc_sigma": 0.0}}), SimpleNamespace(options={"tower": {}}),
              SimpleNamespace(options={"anatomy": {"seg_shape_weight": 2.0}})]  # fmt: skip
    (row,) = seg_shape_rows(SimpleNamespace(stages=lambda: stages))
    assert row[0] == "<seg> shape loss" and row[1].startswith("weight 2 in stage 3: Dice + BCE")
    assert seg_shape_rows(SimpleNamespace(stages=lambda: stages[:2])) == []


@pytest.mark.parametrize(
    "options, message",
    [(dict(seg_shape_weight=-1.0), "seg_shape_weight"), (dict(seg_shape_weight=float("inf")), "seg_shape_weight"),
     (dict(seg_shape_weight=1.0, loss_on_answer_only=False), "answer-only loss")],
)  # fmt: skip
def test_shape_loss_options_that_cannot_work_are_refused(options, message):
    from train.sft import AnatomyArguments

    with pytest.raises(ValueError, match=message):
        AnatomyArguments(model_name_or_path="x", **options)


def test_answer_training_with_the_shape_loss_logs_it_and_records_it(vlm_folder, phantom_corpus, tmp_path):
    from trl import SFTConfig

    from chexanatomy.training_record import read_training_record
    from train.sft import AnatomyArguments, train

    args = AnatomyArguments(model_name_or_path=str(vlm_folder), corpus_dir=str(phantom_corpus), lora=False,
                            seg_shape_weight=1.0, structures_per_sample=2)  # fmt: skip
    sft = SFTConfig(output_dir=str(tmp_path / "vlm"), max_steps=2, per_device_train_batch_size=2, learning_rate=1e-3,
                    save_steps=10, logging_steps=1, report_to="none", use_cpu=True, bf16=False)  # fmt: skip
    out = train(args, sft)
    logged = [h for h in json.loads((out / "training_metrics.json").read_text()) if "loss" in h]
    assert len(logged) == 2 and all(h["seg_shape_loss"] > 0 for h in logged)
    assert read_training_record(out).stages()[-1].options["anatomy"]["seg_shape_weight"] == 1.0
