"""The segmentation-token contract: exact strings, box geometry, validity rules, robustness."""

import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from chexanatomy.mask_tokens import (
    MaskTokenizer,
    answer_locs,
    crop_masks,
    decode,
    decode_batch,
    decode_detections,
    encode_box,
    encode_masks,
    format_detect_target,
    format_prompt,
    format_segment_target,
    join_objects,
)
from chexanatomy.vqvae import MaskVQVAE

SEGMENT_ANSWER = re.compile(r"^(<loc[0-9]{4}>){4}(<seg[0-9]{3}>){16} \S.*$")


class CellCodec:
    """A transparent stand-in codec: code i is 1 when 4x4-grid cell i is mostly inside, else 0.

    Decoding paints cell i +1 for odd codes and -1 for even ones, so where each code lands is visible.
    """

    def __init__(self) -> None:
        self.decode_calls = 0

    def encode_indices(self, masks: torch.Tensor) -> torch.Tensor:
        cells = masks.reshape(-1, 4, 16, 4, 16).mean((2, 4))
        return (cells > 0.5).long().reshape(-1, 16)

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        self.decode_calls += 1
        cells = (indices % 2).float().reshape(-1, 4, 4) * 2 - 1
        return cells.repeat_interleave(16, 1).repeat_interleave(16, 2)


@pytest.fixture(scope="module")
def vqvae() -> MaskVQVAE:
    torch.manual_seed(0)
    return MaskVQVAE().eval()


def _answer(locs, segs, name="left lung"):
    return "".join(f"<loc{v:04d}>" for v in locs) + "".join(f"<seg{v:03d}>" for v in segs) + f" {name}"


def _dice(a, b):
    return 2 * (a & b).sum() / (a.sum() + b.sum())


# ---------------------------------------------------------------------------------------------------
# Strings
# ---------------------------------------------------------------------------------------------------


def test_box_tokens_are_y_first_and_scaled_by_1023():
    # y0 = 10/200, x0 = 30/400, y1 = 110/200, x1 = 300/400 of the (H=200, W=400) image, times 1023
    assert encode_box((10, 30, 110, 300), (200, 400)) == "<loc0051><loc0077><loc0563><loc0767>"
    assert encode_box((0, 0, 200, 400), (200, 400)) == "<loc0000><loc0000><loc1023><loc1023>"
    assert encode_box((-5, -5, 900, 900), (200, 400)) == "<loc0000><loc0000><loc1023><loc1023>"  # clipped


def test_target_and_prompt_strings_are_exact():
    segs = "".join(f"<seg{i:03d}>" for i in range(16))
    box, size = (10, 30, 110, 300), (200, 400)
    assert format_segment_target(box, size, list(range(16)), "left lung") == (
        f"<loc0051><loc0077><loc0563><loc0767>{segs} left lung"
    )
    assert format_detect_target(box, size, "heart") == "<loc0051><loc0077><loc0563><loc0767> heart"
    assert join_objects(["a", "b", "c"]) == "a ; b ; c"
    assert format_prompt("segment", ["heart", "aorta"]) == "segment heart ; aorta"
    assert format_prompt("detect", ["heart"]) == "detect heart"
    for bad in ("lung ; heart", "", "  "):
        with pytest.raises(ValueError, match="structure name"):
            format_detect_target(box, size, bad)
    with pytest.raises(ValueError, match="0..127"):
        format_segment_target(box, size, [128] * 16, "heart")


# ---------------------------------------------------------------------------------------------------
# Decoding: geometry
# ---------------------------------------------------------------------------------------------------


def test_decode_puts_the_mask_in_the_box_at_image_resolution():
    # 341/1023 = 1/3 and 682/1023 = 2/3 of H = 300: rows 100..199; 256 and 767 of W = 200: cols 50..149.
    objects = decode(_answer((341, 256, 682, 767), [1] * 16), (300, 200), CellCodec())
    (obj,) = objects
    assert obj.valid and obj.name == "left lung"
    np.testing.assert_allclose(obj.box_yxyx, (100.0, 50.05, 200.0, 149.95), atol=0.01)
    expected = np.zeros((300, 200), dtype=bool)
    expected[100:200, 50:150] = True
    assert np.array_equal(obj.mask, expected)


def test_decode_keeps_grid_orientation_row_major():
    # Only code 3 (row 0, column 3 of the grid) is "inside": the top-right corner of the box.
    segs = [0] * 16
    segs[3] = 1
    (obj,) = decode(_answer((0, 0, 1023, 1023), segs), (128, 256), CellCodec())
    rows, cols = np.nonzero(obj.mask)
    assert rows.max() < 128 / 4 + 2 and cols.min() > 256 * 3 / 4 - 2
    assert obj.mask.sum() == pytest.approx(128 * 256 / 16, rel=0.1)


def test_untrained_codec_decodes_inside_the_box_only(vqvae):
    (obj,) = decode(_answer((100, 200, 600, 900), list(range(16))), (256, 256), vqvae)
    assert obj.valid and obj.mask.shape == (256, 256) and obj.mask.dtype == bool
    r0, c0, r1, c1 = (round(v) for v in obj.box_yxyx)
    outside = obj.mask.copy()
    outside[r0:r1, c0:c1] = False
    assert not outside.any()


# ---------------------------------------------------------------------------------------------------
# Decoding: validity
# ---------------------------------------------------------------------------------------------------

GOOD_LOCS, GOOD_SEGS = (100, 100, 500, 500), [5] * 16
INVALID_ANSWERS = {
    "3 locs": _answer(GOOD_LOCS[:3], GOOD_SEGS),
    "15 segs": _answer(GOOD_LOCS, GOOD_SEGS[:15]),
    "17 segs": _answer(GOOD_LOCS, GOOD_SEGS + [5]),
    "loc 1024": _answer((100, 100, 1024, 500), GOOD_SEGS),
    "seg 128": _answer(GOOD_LOCS, GOOD_SEGS[:15] + [128]),
    "flat box": _answer((300, 100, 300, 500), GOOD_SEGS),
    "inverted box": _answer((100, 500, 500, 100), GOOD_SEGS),
    "segs first": "".join(f"<seg{v:03d}>" for v in GOOD_SEGS) + "".join(f"<loc{v:04d}>" for v in GOOD_LOCS),
    "truncated": "<loc0100><loc0100><loc0500><loc05",
    "wrong digit count": "<loc100><loc0100><loc0500><loc0500>" + "<seg005>" * 16 + " heart",
    "no tokens": "left lung",
    "text first": "the heart <loc0100><loc0100><loc0500><loc0500>" + "<seg005>" * 16,
}


@pytest.mark.parametrize("text", INVALID_ANSWERS.values(), ids=INVALID_ANSWERS.keys())
def test_invalid_answers_decode_to_an_empty_mask(text, vqvae):
    (obj,) = decode(text, (64, 48), vqvae)
    assert not obj.valid
    assert obj.mask.shape == (64, 48) and not obj.mask.any()


def test_answer_with_several_objects_keeps_order_names_and_validity():
    heart, aorta = _answer(GOOD_LOCS, [4] * 16, "heart"), _answer(GOOD_LOCS, [1] * 16, "aorta")
    text = " ; ".join([heart, "<loc0001> trachea", aorta])
    objects = decode(text, (100, 100), CellCodec())
    assert [(o.name, o.valid) for o in objects] == [("heart", True), ("trachea", False), ("aorta", True)]
    assert not objects[0].mask.any() and objects[2].mask.any()  # even codes paint -1, odd +1


def test_unknown_names_are_kept_verbatim():
    (obj,) = decode(_answer(GOOD_LOCS, GOOD_SEGS, "not an organ \u00e9\u6f22"), (100, 100), CellCodec())
    assert obj.valid and obj.name == "not an organ \u00e9\u6f22"


def test_empty_answers_have_no_objects():
    assert decode("", (10, 10), CellCodec()) == []
    assert decode(" ; ;  ", (10, 10), CellCodec()) == []


TOKENISH = st.lists(
    st.one_of(
        st.sampled_from(["<loc", "<seg", ">", ";", " ; ", " ", "<loc0100>", "<loc1023>", "<seg127>", "<seg005>"]),
        st.integers(0, 99999).map(str),
        st.text(max_size=6),
    ),
    max_size=40,
).map("".join)


@settings(max_examples=150, deadline=None, database=None)
@given(
    text=st.one_of(st.text(max_size=200), st.binary(max_size=100), TOKENISH),
    size=st.tuples(st.integers(1, 40), st.integers(1, 40)),
)
def test_decode_never_raises_and_invalid_means_empty(vqvae, text, size):
    for obj in decode(text, size, vqvae):
        assert obj.mask.shape == size and obj.mask.dtype == bool
        if not obj.valid:
            assert not obj.mask.any() and obj.box_yxyx == (0.0, 0.0, 0.0, 0.0)
    for obj in decode_detections(text, size):
        assert obj.mask.shape == size and (obj.valid or not obj.mask.any())


@settings(max_examples=200, deadline=None, database=None)
@given(
    locs=st.lists(st.integers(0, 1100), min_size=4, max_size=4),
    segs=st.lists(st.integers(0, 140), min_size=16, max_size=16),
)
def test_validity_follows_the_contract_exactly(locs, segs):
    in_range = max(locs) <= 1023 and max(segs) <= 127
    expected = in_range and locs[2] > locs[0] and locs[3] > locs[1]
    (obj,) = decode(_answer(locs, segs), (50, 70), CellCodec())
    assert obj.valid == expected


def test_batched_decode_equals_one_by_one_and_calls_the_codec_once():
    rng = np.random.default_rng(0)
    texts, sizes = [], []
    for i in range(6):
        objects = []
        for j in range(3):
            y0, x0 = rng.integers(0, 500, 2)
            locs = (y0, x0, y0 + rng.integers(1, 500), x0 + rng.integers(1, 500))
            objects.append(_answer(locs, rng.integers(0, 128, 16), f"s{j}") if (i + j) % 4 else "junk")
        texts.append(join_objects(objects))
        sizes.append((int(rng.integers(20, 90)), int(rng.integers(20, 90))))
    codec = CellCodec()
    batched = decode_batch(texts, sizes, codec)
    assert codec.decode_calls == 1
    single = [decode(text, size, codec) for text, size in zip(texts, sizes, strict=True)]
    for batch_objects, single_objects in zip(batched, single, strict=True):
        assert [(o.name, o.valid, o.box_yxyx) for o in batch_objects] == [
            (o.name, o.valid, o.box_yxyx) for o in single_objects
        ]
        assert all(np.array_equal(a.mask, b.mask) for a, b in zip(batch_objects, single_objects, strict=True))


# ---------------------------------------------------------------------------------------------------
# Detection answers
# ---------------------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None, database=None)
@given(data=st.data(), height=st.integers(2, 1023), width=st.integers(2, 1023))
def test_box_survives_encode_then_decode(data, height, width):
    y0 = data.draw(st.integers(0, height - 1))
    x0 = data.draw(st.integers(0, width - 1))
    y1 = data.draw(st.integers(y0 + 1, height))
    x1 = data.draw(st.integers(x0 + 1, width))
    (obj,) = decode_detections(format_detect_target((y0, x0, y1, x1), (height, width), "heart"), (height, width))
    if obj.valid:  # boxes thinner than 1/1023 of the image can collapse onto one token value
        assert tuple(np.round(obj.box_yxyx)) == (y0, x0, y1, x1)
        expected = np.zeros((height, width), dtype=bool)
        expected[y0:y1, x0:x1] = True
        assert np.array_equal(obj.mask, expected)  # a detection decodes to its filled box
    else:
        assert round((y1 - y0) / height * 1023) == 0 or round((x1 - x0) / width * 1023) == 0


def test_detect_and_segment_answers_are_not_interchangeable():
    segment_answer = _answer(GOOD_LOCS, GOOD_SEGS, "heart")
    assert [o.valid for o in decode_detections(segment_answer, (100, 100))] == [False]
    detect_answer = format_detect_target((10, 10, 50, 50), (100, 100), "heart")
    assert [o.valid for o in decode(detect_answer, (100, 100), CellCodec())] == [False]


# ---------------------------------------------------------------------------------------------------
# Encoding masks
# ---------------------------------------------------------------------------------------------------


def _l_shaped_mask(image_hw=(120, 90), box=(20, 10, 100, 70)):
    """A box with its top-right quadrant cut out: asymmetric in y and x."""
    mask = np.zeros(image_hw, dtype=bool)
    y0, x0, y1, x1 = box
    mask[y0:y1, x0:x1] = True
    mask[y0 : (y0 + y1) // 2, (x0 + x1) // 2 : x1] = False
    return mask


@pytest.mark.parametrize("resize", ["bilinear", "nearest"])
def test_encode_then_decode_reproduces_a_blocky_mask(resize):
    mask = _l_shaped_mask()
    tokenizer = MaskTokenizer(CellCodec(), resize=resize)
    (target,) = tokenizer.encode(mask[None], ["left lung"])
    assert SEGMENT_ANSWER.match(target)
    assert target.startswith(encode_box((20, 10, 100, 70), (120, 90)))  # the tight box
    codes = [int(v) for v in re.findall(r"<seg(\d{3})>", target)]
    assert codes == [1, 1, 0, 0, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1]  # row-major: top-right cells empty
    (obj,) = tokenizer.decode(target, (120, 90))
    assert obj.valid and obj.name == "left lung"
    assert _dice(obj.mask, mask) > 0.97


def test_untrained_codec_runs_end_to_end(vqvae):
    yy, xx = np.mgrid[:96, :128]
    masks = np.stack(
        [
            (yy - 40) ** 2 / 30**2 + (xx - 40) ** 2 / 20**2 < 1,
            (yy - 60) ** 2 / 15**2 + (xx - 100) ** 2 / 25**2 < 1,
            (yy >= 5) & (yy < 9) & (xx >= 3) & (xx < 120),
        ]
    )
    names = ["right lung", "heart", "clavicle"]
    targets = encode_masks(torch.from_numpy(masks), names, vqvae)
    assert len(targets) == 3 and all(SEGMENT_ANSWER.match(t) for t in targets)
    objects = decode(join_objects(targets), (96, 128), vqvae)
    assert [o.name for o in objects] == names and all(o.valid for o in objects)
    for obj, mask in zip(objects, masks, strict=True):
        rows, cols = np.nonzero(mask)
        assert tuple(np.round(obj.box_yxyx)) == (rows.min(), cols.min(), rows.max() + 1, cols.max() + 1)
        outside = obj.mask.copy()
        outside[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1] = False
        assert obj.mask.shape == (96, 128) and not outside.any()


def test_widened_box_is_written_in_the_tokens_and_clipped_to_the_image():
    mask = np.zeros((1, 200, 100), dtype=bool)
    mask[0, 50:100, 60:80] = True
    (target,) = encode_masks(mask, ["heart"], CellCodec(), widen_px=10)
    assert target.startswith(encode_box((40, 50, 110, 90), (200, 100)))
    mask[0, 0:5, 95:100] = True  # now touching the top and right borders
    (target,) = encode_masks(mask, ["heart"], CellCodec(), widen_px=10)
    assert target.startswith(encode_box((0, 50, 110, 100), (200, 100)))
    (target,) = encode_masks(mask, ["heart"], CellCodec(), boxes=np.array([[10.4, 20.6, 30.0, 40.0]]))
    assert target.startswith(encode_box((10, 21, 30, 40), (200, 100)))  # given boxes round to whole pixels


def test_bilinear_crops_are_soft_and_nearest_crops_are_binary():
    yy, xx = np.mgrid[:100, :100]
    masks = (yy > xx)[None]  # a diagonal edge, shrunk 100 -> 64
    boxes = np.array([[0, 0, 100, 100]])
    soft = crop_masks(masks, boxes, "bilinear")
    hard = crop_masks(masks, boxes, "nearest")
    assert soft.shape == hard.shape == (1, 64, 64)
    assert ((soft > 0) & (soft < 1)).sum() > 32  # the edge is blurred
    assert set(hard.unique().tolist()) == {0.0, 1.0}
    assert 0.0 <= soft.min() and soft.max() <= 1.0


def test_encoding_errors_name_the_problem():
    masks = np.zeros((2, 20, 20), dtype=bool)
    masks[0, 2:5, 2:5] = True
    with pytest.raises(ValueError, match="mask 1 is empty"):
        encode_masks(masks, ["heart", "aorta"], CellCodec())
    with pytest.raises(ValueError, match="2 masks but 1 names"):
        encode_masks(masks, ["heart"], CellCodec())
    with pytest.raises(ValueError, match="structure name"):
        encode_masks(masks[:1], ["heart ; aorta"], CellCodec())
    with pytest.raises(ValueError, match="resize"):
        MaskTokenizer(CellCodec(), resize="bicubic")
    assert MaskTokenizer(CellCodec(), resize="nearest", widen_px=10).settings() == {
        "mask_resize": "nearest",
        "box_widen_px": 10,
        "loc_scale": 1023,
    }


@pytest.mark.parametrize(
    ("text", "locs"),
    [
        ("<loc0126><loc0126><loc1023><loc1023>" + "<seg001>" * 16 + " right lung", [126, 126, 1023, 1023]),
        ("<loc0100><loc0200> heart", [100, 200]),  # broken answers still show where their box went
        ("<loc0005><loc0006><loc0007><loc0008><loc0009>", [5, 6, 7, 8, 9]),
        ("<loc0001><loc0002><seg003><loc0004> x ; <loc0009><loc0009> y", [1, 2]),  # first object, locs before segs
        ("<seg001><loc0002><loc0003>", []),
        ("right lung", []),
        ("", []),
        (b"\xff<loc0010><loc0011>", []),  # text before the tokens: not an answer's box
    ],
)
def test_answer_locs_reads_the_first_objects_leading_loc_values(text, locs):
    assert answer_locs(text) == locs
