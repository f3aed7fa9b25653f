"""The Space over HTTP: an example comes back as overlays + table, every bad input is a message, the server lives on.

    pytest tests/test_space.py

Tiny random models (a PaliGemma-architecture VLM from ``train.tiny_paligemma`` and a 64 px U-Net) stand in for
the bundled ones; the examples folder is written here with ``space/make_examples.py``'s own writer. The helpers
at the top are shared with ``test_space_browser.py`` and ``test_space_load.py``.
"""

from __future__ import annotations

import importlib.util
import io
import json
import socket
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
UNET_STRUCTURES = ["lung_left", "lung_right", "heart", "trachea", "clavicle_left", "clavicle_right", "liver"]
TEST_MAX_STRUCTURES = 8


# --------------------------------------------------------------------------------------------------
# Shared helpers (imported by the other test_space* files)
# --------------------------------------------------------------------------------------------------


def load_module(name: str, path: Path):
    """Import a file that is not in a package (``space/app.py``, ``space/make_examples.py``, bench scripts)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the class is built
        spec.loader.exec_module(module)
    return sys.modules[name]


def space_app():
    return load_module("chexanatomy_space_app", ROOT / "space" / "app.py")


def space_module(name: str):
    """``space/{name}.py``: the app's own modules, importable as ``space.*`` once the app is loaded."""
    space_app()
    return importlib.import_module(f"space.{name}")


def tiny_model_folders(folder: Path) -> tuple[Path, Path]:
    """A random tiny VLM folder and a random 64 px U-Net folder (built once per session under ``folder``)."""
    from chexanatomy.unet import AnatomyUNet
    from train.tiny_paligemma import TinySpec, build_model, build_processor

    vlm, unet = folder / "vlm", folder / "unet"
    if not (vlm / "config.json").exists():
        spec = TinySpec(image_size=32, patch_size=16, vision_layers=1, text_layers=1, hidden=32, heads=2)
        processor = build_processor(spec)
        build_model(processor, spec).save_pretrained(vlm)
        processor.save_pretrained(vlm)
    if not (unet / "config.json").exists():
        import torch

        torch.manual_seed(0)
        AnatomyUNet(UNET_STRUCTURES, size=64, encoder="resnet18").save_pretrained(unet)
    return vlm, unet


def synthetic_row(view: str = "PA", size: int = 96) -> dict:
    """A corpus-like row: a grey chest-ish image with a 'heart' disc and a 'lung_left' box, masks PIL "1"."""
    yy, xx = np.mgrid[:size, :size]
    heart = (yy - size * 0.6) ** 2 + (xx - size * 0.55) ** 2 < (size * 0.15) ** 2
    lung = (yy > size * 0.2) & (yy < size * 0.7) & (xx > size * 0.55) & (xx < size * 0.85)
    image = (40 + 120 * heart + 60 * lung + np.random.default_rng(0).integers(0, 20, (size, size))).astype(np.uint8)
    structures = [
        {"name": n, "mask": Image.fromarray(m).convert("1")} for n, m in (("heart", heart), ("lung_left", lung))
    ]
    return {
        "image": Image.fromarray(image),
        "structures": structures,
        "view": view,
        "subject_id": "synthetic",
        "source": "test",
        "pose_index": 0,
    }


def make_examples_dir(folder: Path) -> Path:
    """One synthetic example written by make_examples.py's writer, with its examples.json."""
    make_examples = load_module("chexanatomy_space_make_examples", ROOT / "space" / "make_examples.py")
    folder.mkdir(parents=True, exist_ok=True)
    entry = make_examples.write_example(synthetic_row(), folder)
    (folder / "examples.json").write_text(json.dumps({"examples": [entry]}))
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_space(tmp_root: Path, max_structures: int = TEST_MAX_STRUCTURES):
    """(demo, url, examples_dir): the app on tiny models, serving on a free localhost port in a thread."""
    app = space_app()
    vlm_dir, unet_dir = tiny_model_folders(tmp_root / "space_models")
    vlm = app.load_segmenter(str(vlm_dir), device="cpu", max_new_tokens=6)
    unet = app.load_segmenter(str(unet_dir), device="cpu")
    examples = make_examples_dir(tmp_root / "space_examples")
    demo = app.build_demo(vlm, unet, examples, max_structures=max_structures)
    _, url, _ = app.launch(demo, "127.0.0.1", free_port(), block=False, examples_dir=examples)
    return demo, url, examples


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` grey pixels, with a one-row IDAT: a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * (width + 1)))


def write_dicom(path: Path, pixels: np.ndarray, photometric: str = "MONOCHROME2", rescale=(1.0, 0.0), window=None):
    """A 16-bit DX DICOM file (explicit VR little endian) with optional rescale (slope, intercept) and window."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID, "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = rescale
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


# --------------------------------------------------------------------------------------------------
# Reading radiographs (no server)
# --------------------------------------------------------------------------------------------------


def squares(background: int, inner: int, third: int | None = None, size: int = 64) -> np.ndarray:
    """uint16 [size, size]: ``background`` with an ``inner`` square (rows/cols 16:32) and a ``third`` one (40:56)."""
    pixels = np.full((size, size), background, dtype=np.uint16)
    pixels[16:32, 16:32] = inner
    if third is not None:
        pixels[40:56, 40:56] = third
    return pixels


def test_monochrome1_dicom_is_inverted_and_monochrome2_is_not(tmp_path):
    reading = space_module("reading")
    pixels = squares(background=3000, inner=500)  # in MONOCHROME1 low values are white
    mono1, notes = reading.read_upload(write_dicom(tmp_path / "m1.dcm", pixels, "MONOCHROME1"))
    mono2, _ = reading.read_upload(write_dicom(tmp_path / "m2", pixels, "MONOCHROME2"))  # no suffix: sniffed
    a1, a2 = np.asarray(mono1, dtype=float), np.asarray(mono2, dtype=float)
    assert mono1.mode == "L" and mono1.size == (64, 64)
    assert a1[20, 20] == 255 and a1[0, 0] == 0 and a2[20, 20] == 0 and a2[0, 0] == 255
    assert any("MONOCHROME1" in n for n in notes)


def test_dicom_rescale_and_window_are_applied(tmp_path):
    reading = space_module("reading")
    # slope 2, intercept -1000: stored 3000 / 500 / 1250 -> 5000 / 0 / 1500; the window [2000, 3000] clips the
    # inner square and the third square alike (both below it), which min-max scaling alone would not.
    pixels = squares(background=3000, inner=500, third=1250)
    image, notes = reading.read_upload(
        write_dicom(tmp_path / "w.dcm", pixels, rescale=(2.0, -1000.0), window=(2500, 1000))
    )
    grey = np.asarray(image)
    assert grey[20, 20] == grey[45, 45] == 0 and grey[0, 0] == 255
    unwindowed, _ = reading.read_upload(write_dicom(tmp_path / "u.dcm", pixels, rescale=(2.0, -1000.0)))
    assert 0 < np.asarray(unwindowed)[45, 45] < 255
    assert any("window" in n for n in notes)


def test_16_bit_png_and_rgba_are_read_as_grey(tmp_path):
    reading = space_module("reading")
    path16 = tmp_path / "sixteen.png"
    Image.fromarray(squares(background=40000, inner=1000)).save(path16)
    image, _ = reading.read_upload(path16)
    assert image.mode == "L" and np.asarray(image)[0, 0] == 255 and np.asarray(image)[20, 20] == 0
    rgba = np.zeros((64, 64, 4), dtype=np.uint8)
    rgba[..., :3], rgba[..., 3] = 200, 255
    rgba[:8, :, 3] = 0  # a transparent band
    (tmp_path / "rgba.png").write_bytes(png_bytes(Image.fromarray(rgba, "RGBA")))
    image, notes = reading.read_upload(tmp_path / "rgba.png")
    assert np.asarray(image)[0, 0] == 0 and np.asarray(image)[20, 20] == 200 and "alpha" in notes[0]


class OracleSegmenter:
    """A 'U-Net' that answers with the example's ground truth: Dice must read 1.0."""

    kind = "unet"

    def __init__(self, masks: dict[str, np.ndarray]):
        self.masks, self.structures = masks, list(masks)

    def segment(self, image, structures=None):
        from chexanatomy.inference import Prediction
        from chexanatomy.masks import tight_box

        return {n: Prediction(n, self.masks[n], tight_box(self.masks[n])) for n in structures}


def test_example_upload_is_matched_by_content_and_scored(tmp_path):
    handler, bundled_examples = space_module("handler"), space_module("bundled_examples")
    examples = make_examples_dir(tmp_path / "examples")
    row = synthetic_row()
    truth = {s["name"]: np.asarray(s["mask"], dtype=bool) for s in row["structures"]}
    space = handler.SpaceApp(None, OracleSegmenter(truth), bundled_examples.load_examples(examples), max_structures=10)
    copy = tmp_path / "gradio_tmp_copy.png"  # Gradio serves examples from a temporary copy
    copy.write_bytes((examples / "pa_synthetic_pose0.png").read_bytes())
    vlm_overlay, unet_overlay, table, answers, timing, notes = space.segment(str(copy), [], ["heart", "lung_left"])
    assert vlm_overlay is None and [label for _, label in unet_overlay[1]] == ["left lung", "heart"]
    assert [r[0] for r in table] == ["left lung", "heart"] and [r[-1] for r in table] == [1.0, 1.0]
    assert "ground-truth" in notes and "U-Net" in timing


# --------------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    demo, url, examples = start_space(tmp_path_factory.getbasetemp())
    yield url, examples
    demo.close()


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client

    return Client(server[0], verbose=False)


def segment(client, path, regions=(), picks=("heart", "lung_left", "trachea")):
    from gradio_client import handle_file

    return client.predict(handle_file(str(path)), list(regions), list(picks), api_name="/segment")


def assert_works(client, path, **kwargs):
    vlm, unet, table, answers, timing, notes = segment(client, path, **kwargs)
    assert table["data"] and Path(vlm["image"]).exists() and Path(unet["image"]).exists()
    return vlm, unet, table, answers, timing, notes


def test_an_example_comes_back_with_table_overlays_and_dice(client, server):
    vlm, unet, table, answers, timing, notes = assert_works(client, server[1] / "pa_synthetic_pose0.png")
    rows = {r[0]: dict(zip(table["headers"], r, strict=True)) for r in table["data"]}
    assert list(rows) == ["left lung", "heart", "trachea"]  # region order, display names
    assert table["headers"][-2:] == ["VLM Dice", "U-Net Dice"]
    assert isinstance(rows["heart"]["U-Net Dice"], float) and rows["trachea"]["U-Net Dice"] == "—"  # no truth
    assert rows["heart"]["VLM valid"] in ("yes", "no") and isinstance(rows["heart"]["U-Net area px"], int)
    assert {a["label"] for a in unet["annotations"]} <= {"trachea", "heart", "left lung"}
    assert Image.open(unet["image"]).size == (96, 96)
    assert answers.startswith("left lung: ") and "\nheart: " in answers and "\ntrachea: " in answers
    assert "VLM" in timing and "U-Net" in timing and "ground-truth" in notes


def bad_inputs(folder: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, expected message fragment)."""
    folder.mkdir(exist_ok=True)
    noise = Image.fromarray(np.random.default_rng(1).integers(0, 255, (256, 256), dtype=np.uint8))
    files = {
        "text": ("notes.txt", b"not a radiograph\n", "is not an image"),
        "text_named_png": ("fake.png", b"hello", "is not an image"),
        "truncated": ("cut.png", png_bytes(noise)[:20000], "truncated or damaged"),
        "bomb": ("bomb.png", png_header_only(20000, 20000), "decompression bomb"),
        "bomb_warning_zone": ("big.png", png_header_only(8000, 8000), "at most 50 megapixels"),
        "one_pixel": ("one.png", png_bytes(Image.new("L", (1, 1))), "too small"),
        "sliver": ("sliver.png", png_bytes(Image.new("L", (4000, 60))), "too small"),
        "garbage_dicom": ("scan.dcm", b"\0" * 200, "not a readable DICOM"),
    }
    out = {}
    for name, (filename, data, message) in files.items():
        (folder / filename).write_bytes(data)
        out[name] = (folder / filename, message)
    return out


@pytest.mark.parametrize("name", ["text", "text_named_png", "truncated", "bomb", "bomb_warning_zone", "one_pixel",
                                  "sliver", "garbage_dicom"])  # fmt: skip
def test_bad_file_is_a_message_and_the_next_request_works(client, server, tmp_path, name):
    from gradio_client.exceptions import AppError

    path, message = bad_inputs(tmp_path)[name]
    with pytest.raises(AppError, match=message):
        segment(client, path)
    assert_works(client, server[1] / "pa_synthetic_pose0.png")


def test_bad_selections_are_messages(client, server):
    from gradio_client.exceptions import AppError

    example = server[1] / "pa_synthetic_pose0.png"
    with pytest.raises(AppError, match="No structure selected"):
        segment(client, example, picks=())
    *_, table, _, _, notes = segment(client, example, regions=["all"], picks=())
    assert len(table["data"]) == TEST_MAX_STRUCTURES and f"only the first {TEST_MAX_STRUCTURES}" in notes
    assert "The U-Net does not segment left upper lobe" in notes  # the tiny U-Net knows whole lungs only
    *_, table, _, _, notes = segment(client, example, regions=["shoulder girdle"], picks=())
    assert {r[0] for r in table["data"]} >= {"left clavicle", "right scapula", "left humerus"}


def test_large_rgba_jpeg_and_dicom_inputs_work(client, tmp_path):
    big = tmp_path / "big.png"
    Image.new("RGBA", (2400, 1200), (90, 90, 90, 200)).save(big)
    vlm, unet, table, _, timing, notes = assert_works(client, big)
    assert Image.open(unet["image"]).size == (1024, 512) and "downscaled from 2400x1200" in notes
    assert "alpha channel" in notes and "1024x512" in timing
    jpeg = tmp_path / "film.jpg"
    Image.fromarray(squares(200, 30).astype(np.uint8)).save(jpeg, quality=90)
    assert_works(client, jpeg)
    dicom = write_dicom(tmp_path / "film.dcm", squares(3000, 500), "MONOCHROME1", window=(1750, 3000))
    *_, notes = assert_works(client, dicom)
    assert "MONOCHROME1" in notes and "window" in notes


def test_committed_examples_are_complete_and_small():
    bundled_examples = space_module("bundled_examples")
    examples = bundled_examples.load_examples(ROOT / "space" / "examples")
    meta = json.loads((ROOT / "space" / "examples" / "examples.json").read_text())["examples"]
    assert len(examples) == len(meta) >= 5 and {m["view"] for m in meta} == {"PA", "LAT"}
    assert [m["source"] for m in meta[:2]] == ["real", "real"] and examples[0].masks is None  # real images first
    assert sum(p.stat().st_size for p in (ROOT / "space" / "examples").iterdir()) < 2.5e6
    for example, entry in zip(examples, meta, strict=True):  # examples.json order: real, real, PA, LAT, PA
        assert bundled_examples.file_sha256(example.image) == entry["sha256"]
        if example.masks is None:
            continue
        truth = bundled_examples.load_ground_truth(example.masks, tuple(entry["size"]))
        assert len(truth) == entry["structures"] and all(m.shape == (512, 512) for m in truth.values())
