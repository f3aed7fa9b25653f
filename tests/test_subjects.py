"""chexanatomy.subjects: one hash of a subject id behind its split, its seeds and its file name."""

import hashlib

import pytest

from chexanatomy.subjects import safe_name, stable_fraction, stable_seed
from dataset_builder.corpus import split_of

IDS = ["s0001", "phantom-ps000", "ct_rate/train_1_a_1", "x 1", "é"]


def test_split_and_seeds_are_the_formulas_published_corpora_were_built_with():
    for sid in IDS:
        digest = hashlib.sha256(sid.encode()).digest()
        assert stable_fraction(sid) == int(digest.hex()[:8], 16) / 2**32  # split_of's number before the move
        assert stable_seed(sid) == int.from_bytes(digest[:8], "little") >> 1  # render's seed before the move
    assert stable_seed(0, "s1", "PA", 2) == int.from_bytes(hashlib.sha256(b"0|s1|PA|2").digest()[:8], "little") >> 1
    assert [split_of(s) for s in IDS] == [split_of(s) for s in IDS]


def test_safe_names_are_injective_and_take_any_string():
    ids = ["x 1", "x_1", "x/1", "../x", "a\udcff"]  # the last one is not valid UTF-8 on its own
    names = [safe_name(i) for i in ids]
    assert len(set(names)) == len(ids) and all("/" not in n for n in names)
    assert safe_name("phantom-ps000") == "phantom-ps000"
    with pytest.raises(ValueError, match="empty"):
        safe_name("")
