"""Real-radiograph loaders on tiny synthetic datasets written in each published layout."""

import csv

import numpy as np
import pytest
from PIL import Image

from chexanatomy.anatomy import STRUCTURES
from eval.real_cxr import (
    LUNG_DEFINITION,
    decode_chexmask_rle,
    load_chexmask,
    load_jsrt_scr,
    load_montgomery,
    load_shenzhen,
    radiographic_lung_field,
)
from tests.conftest import centroid_yx

SCR_FOLDERS = ["left lung", "right lung", "heart", "left clavicle", "right clavicle"]


def box_mask(shape, y0, x0, y1, x1):
    mask = np.zeros(shape, bool)
    mask[y0:y1, x0:x1] = True
    return mask


def save_png(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def save_mask(path, mask):
    save_png(path, (mask * 255).astype(np.uint8))


def pa_lungs(shape):
    """(image-left lung, image-right lung) of a PA view: the patient's right, then the patient's left."""
    h, w = shape
    return box_mask(shape, h // 5, w // 10, 4 * h // 5, 4 * w // 10), box_mask(
        shape, h // 5, 6 * w // 10, 4 * h // 5, 9 * w // 10
    )


# ---------------------------------------------------------------------------------------------------- JSRT + SCR


def write_jsrt(jsrt_dir, scr_dir, image_id="JPCLN001"):
    """One JSRT .IMG (2048^2 big-endian 12-bit, air = high raw values) and its five SCR GIFs at 1024^2."""
    jsrt_dir.mkdir(parents=True, exist_ok=True)
    raw = np.full((2048, 2048), 1000, dtype=">u2")
    image_left, image_right = pa_lungs((2048, 2048))
    raw[image_left | image_right] = 4095  # lungs: most transmitted, darkest on display
    raw.tofile(jsrt_dir / f"{image_id}.IMG")
    small_left, small_right = pa_lungs((1024, 1024))
    masks = {
        "left lung": small_right,  # SCR "left lung" is the patient's left: on the image's right
        "right lung": small_left,
        "heart": box_mask((1024, 1024), 500, 420, 800, 650),
        "left clavicle": box_mask((1024, 1024), 150, 600, 190, 900),
        "right clavicle": box_mask((1024, 1024), 150, 120, 190, 420),
    }
    for folder, mask in masks.items():
        path = scr_dir / "masks" / folder / f"{image_id}.gif"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((mask * 255).astype(np.uint8)).save(path)  # PIL writes a palette GIF
    return masks


def test_jsrt_scr_reads_published_layout_with_patient_sides(tmp_path):
    masks = write_jsrt(tmp_path / "All247images", tmp_path / "SCR")
    (record,) = load_jsrt_scr(tmp_path / "All247images", tmp_path / "SCR")
    assert record["id"] == "JPCLN001" and record["source"] == "jsrt"
    assert record["image"].mode == "L" and record["image"].size == (1024, 1024)  # downsampled to the mask grid
    assert record["spacing_mm"] == pytest.approx((0.35, 0.35))
    assert set(record["masks"]) == {"lung_left", "lung_right", "heart", "clavicle_left", "clavicle_right"}
    assert set(record["masks"]) <= set(STRUCTURES)
    # a lung drawn on the image's right of a PA view is the patient's LEFT lung
    assert centroid_yx(record["masks"]["lung_left"])[1] > 512 > centroid_yx(record["masks"]["lung_right"])[1]
    assert centroid_yx(record["masks"]["clavicle_left"])[1] > 512
    np.testing.assert_array_equal(record["masks"]["heart"], masks["heart"])
    image = np.asarray(record["image"])
    lungs = record["masks"]["lung_left"] | record["masks"]["lung_right"]
    assert image[lungs].mean() < 5 and image[~lungs].mean() > 150  # air dark, as in our DRRs


def test_jsrt_scr_max_side_and_fold_layout(tmp_path):
    write_jsrt(tmp_path / "imgs", tmp_path / "scratch" / "fold1")  # SCR's fold1/masks/... layout
    (record,) = load_jsrt_scr(tmp_path / "imgs", tmp_path / "scratch", max_side=256)
    assert record["image"].size == (256, 256) and record["masks"]["heart"].shape == (256, 256)
    assert record["spacing_mm"] == pytest.approx((1.4, 1.4))
    assert centroid_yx(record["masks"]["lung_left"])[1] > 128


def test_jsrt_truncated_image_is_a_clear_error(tmp_path):
    write_jsrt(tmp_path / "imgs", tmp_path / "SCR")
    path = tmp_path / "imgs" / "JPCLN001.IMG"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"JPCLN001\.IMG.*truncated"):
        next(load_jsrt_scr(tmp_path / "imgs", tmp_path / "SCR"))


def test_jsrt_little_endian_export_is_rejected(tmp_path):
    write_jsrt(tmp_path / "imgs", tmp_path / "SCR")
    path = tmp_path / "imgs" / "JPCLN001.IMG"
    np.fromfile(path, dtype=">u2").astype("<u2").tofile(path)
    with pytest.raises(ValueError, match="12 bits"):
        next(load_jsrt_scr(tmp_path / "imgs", tmp_path / "SCR"))


def test_scr_missing_mask_folder_and_file(tmp_path):
    write_jsrt(tmp_path / "imgs", tmp_path / "SCR")
    for p in (tmp_path / "SCR" / "masks" / "heart").iterdir():
        p.unlink()
    with pytest.raises(FileNotFoundError, match=r"heart/JPCLN001\.gif"):
        next(load_jsrt_scr(tmp_path / "imgs", tmp_path / "SCR"))
    (tmp_path / "SCR" / "masks" / "heart").rmdir()
    with pytest.raises(FileNotFoundError, match="'heart'"):
        next(load_jsrt_scr(tmp_path / "imgs", tmp_path / "SCR"))


# ---------------------------------------------------------------------------------------------------- Montgomery


def write_montgomery(root, name="MCUCXR_0001_0.png", shape=(60, 80), swap_folders=False):
    image_left, image_right = pa_lungs(shape)
    save_png(root / "CXR_png" / name, np.where(image_left | image_right, 30, 200).astype(np.uint8))
    # the patient's left lung (image right) in leftMask, unless swapped: the loader must not depend on it
    left, right = (image_left, image_right) if swap_folders else (image_right, image_left)
    save_mask(root / "ManualMask" / "leftMask" / name, left)
    save_mask(root / "ManualMask" / "rightMask" / name, right)
    return image_left, image_right


@pytest.mark.parametrize("swap_folders", [False, True])
def test_montgomery_sides_come_from_position(tmp_path, swap_folders):
    image_left, image_right = write_montgomery(tmp_path, swap_folders=swap_folders)
    (record,) = load_montgomery(tmp_path)
    assert record["source"] == "montgomery" and record["id"] == "MCUCXR_0001_0"
    assert record["spacing_mm"] == pytest.approx((0.0875, 0.0875))
    np.testing.assert_array_equal(record["masks"]["lung_left"], image_right)  # image right = patient left
    np.testing.assert_array_equal(record["masks"]["lung_right"], image_left)


def test_montgomery_max_side_scales_spacing_per_axis(tmp_path):
    write_montgomery(tmp_path, shape=(60, 80))
    (record,) = load_montgomery(tmp_path, max_side=40)
    assert record["image"].size == (40, 30) and record["masks"]["lung_left"].shape == (30, 40)
    assert record["spacing_mm"] == pytest.approx((0.175, 0.175))


def test_montgomery_bad_inputs(tmp_path):
    write_montgomery(tmp_path)
    save_mask(tmp_path / "ManualMask" / "rightMask" / "MCUCXR_0001_0.png", np.ones((50, 80), bool))
    with pytest.raises(ValueError, match=r"rightMask/MCUCXR_0001_0\.png: mask is 80x50.*same size"):
        next(load_montgomery(tmp_path))

    write_montgomery(tmp_path)
    same_half = box_mask((60, 80), 10, 50, 40, 70)
    save_mask(tmp_path / "ManualMask" / "rightMask" / "MCUCXR_0001_0.png", same_half)
    save_mask(tmp_path / "ManualMask" / "leftMask" / "MCUCXR_0001_0.png", same_half)
    with pytest.raises(ValueError, match="same half"):
        next(load_montgomery(tmp_path))

    write_montgomery(tmp_path)
    image = tmp_path / "CXR_png" / "MCUCXR_0001_0.png"
    image.write_bytes(image.read_bytes()[:60])
    with pytest.raises(ValueError, match=r"MCUCXR_0001_0\.png: cannot decode image"):
        next(load_montgomery(tmp_path))

    for p in (tmp_path / "ManualMask" / "leftMask").iterdir():
        p.unlink()
    (tmp_path / "ManualMask" / "leftMask").rmdir()
    with pytest.raises(FileNotFoundError, match="leftMask"):
        next(load_montgomery(tmp_path))


# ---------------------------------------------------------------------------------------------------- Shenzhen


def test_shenzhen_both_lungs_in_one_mask(tmp_path):
    shape = (48, 64)
    image_left, image_right = pa_lungs(shape)
    rgb = np.repeat(np.where(image_left | image_right, 20, 180).astype(np.uint8)[..., None], 3, axis=2)
    save_png(tmp_path / "CXR_png" / "CHNCXR_0001_0.png", rgb)  # some Shenzhen PNGs are RGB
    save_png(tmp_path / "CXR_png" / "CHNCXR_0002_1.png", np.zeros(shape, np.uint8))  # no mask: skipped
    save_mask(tmp_path / "mask" / "CHNCXR_0001_0_mask.png", image_left | image_right)
    (record,) = load_shenzhen(tmp_path)
    assert record["id"] == "CHNCXR_0001_0" and record["source"] == "shenzhen"
    assert record["image"].mode == "L" and record["spacing_mm"] is None
    assert list(record["masks"]) == ["lungs"] and STRUCTURES["lungs"].derived
    np.testing.assert_array_equal(record["masks"]["lungs"], image_left | image_right)

    save_mask(tmp_path / "mask" / "CHNCXR_0003_0_mask.png", image_left)
    with pytest.raises(FileNotFoundError, match=r"CHNCXR_0003_0\.png"):
        list(load_shenzhen(tmp_path))


def test_shenzhen_missing_mask_folder(tmp_path):
    save_png(tmp_path / "CXR_png" / "CHNCXR_0001_0.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(FileNotFoundError, match="mask"):
        next(load_shenzhen(tmp_path))


# ---------------------------------------------------------------------------------------------------- CheXmask


def encode_rle(mask):
    """Independent CheXmask-style encoder: 1-indexed start/length pairs over the row-major flattened mask."""
    flat = mask.reshape(-1).tolist()
    pairs, i = [], 0
    while i < len(flat):
        if flat[i]:
            j = i
            while j < len(flat) and flat[j]:
                j += 1
            pairs += [i + 1, j - i]
            i = j
        else:
            i += 1
    return " ".join(map(str, pairs))


def official_decode(rle, height, width):
    """The loop of CheXmask's get_mask_from_RLE (DataPostprocessing/utils.py), rewritten for the test."""
    runs = [int(x) for x in rle.split()]
    mask = np.zeros(height * width, dtype=np.uint8)
    for start, length in zip(runs[::2], runs[1::2], strict=True):
        mask[start - 1 : start - 1 + length] = 255
    return mask.reshape((height, width)) > 0


@pytest.mark.parametrize("seed", range(4))
def test_rle_decoder_matches_chexmask_convention(seed):
    rng = np.random.default_rng(seed)
    mask = rng.random((13, 17)) < 0.4
    mask[0, 0] = mask[-1, -1] = True  # runs touching both ends of the flattened array
    rle = encode_rle(mask)
    np.testing.assert_array_equal(decode_chexmask_rle(rle, 13, 17), mask)
    np.testing.assert_array_equal(decode_chexmask_rle(rle, 13, 17), official_decode(rle, 13, 17))
    assert not decode_chexmask_rle("", 13, 17).any()


def test_rle_decoder_rejects_malformed_strings():
    with pytest.raises(ValueError, match="odd number"):
        decode_chexmask_rle("1 2 3", 4, 4)
    with pytest.raises(ValueError, match="outside"):
        decode_chexmask_rle("15 5", 4, 4)
    with pytest.raises(ValueError, match="outside"):
        decode_chexmask_rle("0 2", 4, 4)


def write_chexmask(tmp_path, rows, id_column="dicom_id", shape=(40, 50)):
    """A CheXmask CSV plus one PNG per row, nested the way MIMIC-CXR-JPG stores them."""
    image_left, image_right = pa_lungs(shape)
    heart = box_mask(shape, 20, 20, 32, 32)
    header = [id_column, "Dice RCA (Mean)", "Dice RCA (Max)", "Landmarks", "Left Lung", "Right Lung", "Heart"]
    header += ["Height", "Width"]
    csv_path = tmp_path / "MIMIC-CXR-JPG.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for image_id, quality in rows:
            rles = [encode_rle(image_right), encode_rle(image_left), encode_rle(heart)]  # Left Lung: image right
            writer.writerow([image_id, quality, quality + 0.05, "[[1, 2]]", *rles, shape[0], shape[1]])
            save_png(tmp_path / "files" / "p10" / "s1" / f"{image_id}.jpg", np.full(shape, 90, np.uint8))
    return csv_path, image_left, image_right, heart


def test_chexmask_columns_sides_and_quality_filter(tmp_path):
    csv_path, image_left, image_right, heart = write_chexmask(tmp_path, [("good", 0.91), ("poor", 0.55)])
    records = list(load_chexmask(csv_path, tmp_path / "files"))
    assert [r["id"] for r in records] == ["good"]  # Dice RCA (Mean) < 0.7 dropped
    (record,) = records
    assert record["source"] == "chexmask" and record["spacing_mm"] is None and record["image"].mode == "L"
    np.testing.assert_array_equal(record["masks"]["lung_left"], image_right)  # patient's left: image right
    np.testing.assert_array_equal(record["masks"]["lung_right"], image_left)
    np.testing.assert_array_equal(record["masks"]["heart"], heart)
    assert [r["id"] for r in load_chexmask(csv_path, tmp_path / "files", min_quality=None)] == ["good", "poor"]
    assert [r["id"] for r in load_chexmask(csv_path, tmp_path / "files", min_quality=0.5)] == ["good", "poor"]


def test_chexmask_image_id_column_and_errors(tmp_path):
    csv_path, *_ = write_chexmask(tmp_path, [("00000001_000", 0.9)], id_column="ImageID")
    (record,) = load_chexmask(csv_path, tmp_path / "files")
    assert record["id"] == "00000001_000"

    save_png(tmp_path / "files" / "p10" / "s1" / "00000001_000.jpg", np.zeros((40, 49), np.uint8))
    with pytest.raises(ValueError, match=r"00000001_000\.jpg: image is 49x40.*50x40"):
        next(load_chexmask(csv_path, tmp_path / "files"))
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(FileNotFoundError, match="00000001_000"):
        next(load_chexmask(csv_path, tmp_path / "elsewhere"))

    bad = tmp_path / "bad.csv"
    bad.write_text("ImageID,Left Lung\nx,1 2\n")
    with pytest.raises(ValueError, match=r"bad\.csv: not a CheXmask CSV, missing columns"):
        next(load_chexmask(bad, tmp_path / "files"))


def test_chexmask_malformed_rle_names_row_and_column(tmp_path):
    csv_path, *_ = write_chexmask(tmp_path, [("abc", 0.9)])
    text = csv_path.read_text().splitlines()
    fields = next(csv.reader([text[1]]))
    fields[5] = "1 2 3"  # Right Lung
    with csv_path.open("w", newline="") as f:
        csv.writer(f).writerows([next(csv.reader([text[0]])), fields])
    with pytest.raises(ValueError, match=r"id 'abc', column 'Right Lung': RLE has an odd number"):
        next(load_chexmask(csv_path, tmp_path / "files"))


# ---------------------------------------------------------------------------------------------------- definitions


def test_radiographic_lung_field_removes_every_occluder():
    lung = box_mask((20, 20), 2, 2, 18, 10)
    heart = box_mask((20, 20), 10, 6, 16, 14)
    liver = box_mask((20, 20), 16, 0, 20, 10)
    field = radiographic_lung_field(lung, [heart, liver])
    assert field.sum() == (lung & ~heart & ~liver).sum()
    assert not (field & heart).any() and not (field & liver).any() and not (field & ~lung).any()
    assert np.array_equal(radiographic_lung_field(lung, []), lung)
    with pytest.raises(ValueError):
        radiographic_lung_field(lung, [heart[:10]])


def test_every_source_documents_its_lung_definition():
    assert LUNG_DEFINITION == {"jsrt": "scr", "montgomery": "scr", "shenzhen": "scr", "chexmask": "scr"}
