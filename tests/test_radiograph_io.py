"""chexanatomy.radiograph_io: one reading rule for PNG, JPEG, 16-bit and DICOM, shared by the Space and eval.

The copies disagreed before: the Space applied the DICOM modality and VOI look-up tables, the domain-gap study
read raw stored values. The Space's rule won; these tests hold every reader to it.
"""

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from test_space import png_header_only, space_module, squares, write_dicom

from chexanatomy.radiograph_io import RadiographError, read_radiograph
from eval.domain_gap import load_image_folder


def with_voi_lut_sequence(path, pixels):
    """A MONOCHROME2 DICOM of stored values 0..3 whose VOI LUT maps them to 0, 1000, 500, 4000 (not monotone)."""
    import pydicom

    write_dicom(path, pixels)
    ds = pydicom.dcmread(path)
    lut = Dataset()
    lut.LUTDescriptor = [4, 0, 16]
    lut.add_new(0x00283006, "US", [0, 1000, 500, 4000])  # LUT Data
    ds.VOILUTSequence = [lut]
    ds.save_as(path, enforce_file_format=True)
    return path


def test_voi_lut_sequence_is_applied(tmp_path):
    pixels = np.tile(np.repeat(np.arange(4, dtype=np.uint16), 16), (16, 1))  # four 16-column bands
    levels, notes = read_radiograph(with_voi_lut_sequence(tmp_path / "lut.dcm", pixels))
    row = levels[0, ::16]
    assert row == pytest.approx([0, 0.25, 0.125, 1.0])  # stored 2 is darker than stored 1: the LUT, not raw values
    assert any("VOI LUT" in n for n in notes)


def test_monochrome1_window_and_rescale_read_the_same_in_the_space_and_eval(tmp_path):
    pixels = squares(background=3000, inner=500, third=1250)
    path = write_dicom(tmp_path / "film.dcm", pixels, "MONOCHROME1", rescale=(2.0, -1000.0), window=(2500, 1000))
    levels, notes = read_radiograph(path)
    # rescaled 5000 / 0 / 1500; the window [2000, 3000] clips both squares to its bottom; MONOCHROME1 -> bright
    assert levels[0, 0] == 0.0 and levels[20, 20] == levels[45, 45] == 1.0
    assert any("MONOCHROME1" in n for n in notes) and any("window" in n for n in notes)
    assert np.array_equal(np.asarray(load_image_folder(tmp_path)["film"]), levels)  # the domain-gap study
    space_image, _ = space_module("reading").read_upload(path)
    assert np.array_equal(np.asarray(space_image), np.round(levels * 255).astype(np.uint8))


def test_modality_lut_is_applied_before_anything_else(tmp_path):
    """A negative rescale slope turns stored values around: raw pixels (the old domain-gap rule) would not."""
    path = write_dicom(tmp_path / "neg.dcm", squares(background=3000, inner=500), rescale=(-1.0, 4000.0))
    levels, _ = read_radiograph(path)
    assert levels[20, 20] == 1.0 and levels[0, 0] == 0.0


def test_pictures_16_bit_and_8_bit(tmp_path):
    Image.fromarray(squares(background=40000, inner=1000)).save(tmp_path / "deep.png")
    levels, notes = read_radiograph(tmp_path / "deep.png")
    assert levels.dtype == np.float32 and levels[0, 0] == 1.0 and levels[20, 20] == 0.0 and notes == []
    ramp = np.arange(256, dtype=np.uint8).reshape(16, 16)
    Image.fromarray(ramp).save(tmp_path / "ramp.png")
    assert np.array_equal(np.round(read_radiograph(tmp_path / "ramp.png")[0] * 255), ramp)


def test_refusals_name_the_file_in_one_line(tmp_path):
    (tmp_path / "notes.png").write_text("hello")
    (tmp_path / "big.png").write_bytes(png_header_only(8000, 8000))
    (tmp_path / "scan.dcm").write_bytes(b"\0" * 200)
    for name, message in [("notes.png", "is not an image"), ("big.png", "64,000,000 pixels; at most 50 megapixels"),
                          ("scan.dcm", "not a readable DICOM")]:  # fmt: skip
        with pytest.raises(RadiographError, match=message) as info:
            read_radiograph(tmp_path / name)
        assert str(info.value).startswith(name) and "\n" not in str(info.value)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        read_radiograph(tmp_path / "missing.png")
