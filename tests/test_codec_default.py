"""The bundled anatomy codec and the text targets it writes into the corpus."""

import numpy as np
import pytest
import torch

from chexanatomy.codec import codec_fingerprint, default_tokenizer, load_codec
from chexanatomy.mask_tokens import MaskTokenizer, decode_detections
from chexanatomy.masks import tight_box
from dataset_builder.corpus import to_row


def dice(a, b):
    return 2 * (a & b).sum() / max(a.sum() + b.sum(), 1)


@pytest.fixture(scope="module")
def tokenizer():
    return default_tokenizer()


def test_bundled_codec_loads_offline_and_has_a_stable_fingerprint():
    a, b = load_codec(), load_codec("default")
    assert codec_fingerprint(a) == codec_fingerprint(b)
    with torch.no_grad():
        b.decoder[12].bias += 0.1
    assert codec_fingerprint(a) != codec_fingerprint(b)


def test_single_structures_round_trip_through_tokens(phantom_views, tokenizer):
    view = phantom_views["PA"]
    names = ["lung_left", "lung_right", "heart", "trachea", "thoracic_spine", "clavicle_left"]
    masks = np.stack([view.masks[n] for n in names])
    texts = tokenizer.encode(masks, names)
    decoded = tokenizer.decode(" ; ".join(texts), view.image.shape)
    assert [d.name for d in decoded] == names and all(d.valid for d in decoded)
    scores = {n: dice(m, d.mask) for n, m, d in zip(names, masks, decoded, strict=True)}
    assert min(scores.values()) > 0.8, scores
    assert np.mean(list(scores.values())) > 0.9, scores


def test_corpus_rows_carry_targets_that_decode_to_their_masks(phantom_views, tokenizer):
    view = phantom_views["PA"]
    row = to_row(view, "phantom", "phantom", 1.5, tokenizer)
    by_name = {s["name"]: s for s in row["structures"]}
    lung = by_name["lung_left"]
    assert lung["segment_target"].endswith(" left lung") and lung["segment_target"].count("<seg") == 16
    decoded = tokenizer.decode(lung["segment_target"], view.image.shape)[0]
    assert decoded.valid and dice(view.masks["lung_left"], decoded.mask) > 0.85
    ribs = by_name["ribs_left"]  # a union of twelve ribs: box target only
    assert ribs["segment_target"] is None
    box = decode_detections(ribs["detect_target"], view.image.shape)[0]
    y0, x0, y1, x1 = tight_box(view.masks["ribs_left"])
    assert box.valid and np.allclose(box.box_yxyx, (y0, x0, y1, x1), atol=1)


def test_bfloat16_tokenizer_decodes_the_same_structures_almost_identically(phantom_views, tokenizer):
    """The fast (bfloat16) codec is a speed option: its masks stay within a Dice hair of float32's."""
    view = phantom_views["PA"]
    names = ["lung_left", "lung_right", "heart", "trachea", "thoracic_spine", "clavicle_left"]
    masks = np.stack([view.masks[n] for n in names])
    fast = MaskTokenizer(tokenizer.codec, precision="bfloat16")
    exact = tokenizer.decode(" ; ".join(tokenizer.encode(masks, names)), view.image.shape)
    quick = fast.decode(" ; ".join(fast.encode(masks, names)), view.image.shape)
    assert [q.name for q in quick] == names and all(q.valid for q in quick)
    for e, q in zip(exact, quick, strict=True):  # one decoded object per " ; "-joined answer
        assert dice(e.mask, q.mask) > 0.95, e.name
    with pytest.raises(ValueError, match="precision"):
        MaskTokenizer(tokenizer.codec, precision="float16")


def test_rows_without_a_codec_have_no_targets(phantom_views):
    row = to_row(phantom_views["PA"], "phantom", "phantom", 1.5, None)
    assert all(s["segment_target"] is None and s["detect_target"] is None for s in row["structures"])


def test_one_loader_takes_default_none_a_folder_and_an_npz(tmp_path):
    from chexanatomy.vae_oid import export_vae_oid_npz

    default = load_codec("default")
    assert load_codec("none") is None and load_codec("None") is None
    default.save_pretrained(tmp_path / "folder")
    npz = export_vae_oid_npz(default, tmp_path / "vae-oid.npz")
    for other in (load_codec(tmp_path / "folder"), load_codec(str(npz))):
        assert codec_fingerprint(other) == codec_fingerprint(default) and not other.training
    with pytest.raises(FileNotFoundError, match="absent"):
        load_codec(tmp_path / "absent")
