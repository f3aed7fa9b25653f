"""What a published model folder carries for users without CheXanatomy (``python -m chexanatomy.model_bundle``).

* the bundled folders are up to date (``LICENSE``; for the VLM ``seg_decoder.py``, ``seg_decoder.json`` and
  ``answer_contract.py``, the last byte for byte the core's);
* the VLM folder's ``seg_decoder.py``, run with our packages blocked, turns answers into the same masks as
  ``MaskTokenizer.decode`` (valid, invalid, several objects, over the cap, small and large images);
* rerunning the command on a retrained folder writes only what changed and never touches weights or tokenizer.
"""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
from test_hub_user import hub_user

from chexanatomy import model_bundle
from chexanatomy.mask_tokens import MaskTokenizer, join_objects
from chexanatomy.vqvae import MaskVQVAE

ROOT = Path(__file__).resolve().parents[1]
VLM = ROOT / "chexanatomy" / "assets" / "models" / "tiny_vlm"


def test_the_bundled_model_folders_are_up_to_date():
    assert {p.name for p in model_bundle.model_folders()} >= {"tiny_vlm", "unet"}
    for folder in model_bundle.model_folders():
        assert model_bundle.stale_files(folder) == [], f"{folder}: run python -m chexanatomy.model_bundle"
    assert (VLM / "answer_contract.py").read_bytes() == (ROOT / "chexanatomy" / "answer_contract.py").read_bytes()
    assert (VLM / "LICENSE").read_bytes() == (ROOT / "LICENSE").read_bytes()
    assert model_bundle.main(["--check"]) == 0


def blobs(rng: np.random.Generator, image_hw: tuple[int, int], count: int) -> np.ndarray:
    """``count`` random ellipses [count, H, W] bool, of random size and place."""
    h, w = image_hw
    yy, xx = np.mgrid[:h, :w]
    out = []
    for _ in range(count):
        cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
        ry, rx = rng.uniform(0.03, 0.3) * h + 1, rng.uniform(0.03, 0.3) * w + 1
        out.append(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1)
    return np.stack(out)


def answers(codec: MaskVQVAE) -> list[tuple[str, tuple[int, int]]]:
    """Answers a model may give, with their image sizes: encoded masks, random codes, broken and runaway text."""
    rng = np.random.default_rng(23)
    tokenizer, out = MaskTokenizer(codec), []
    for size in [(512, 480), (37, 50), (1800, 1500)]:
        targets = tokenizer.encode(blobs(rng, size, 3), ["heart", "lung_left", "clavicle_right"])
        out.append((join_objects(targets), size))
    codes = "".join(f"<seg{c:03d}>" for c in rng.integers(0, 128, 16))
    out += [
        (f"<loc0100><loc0200><loc0900><loc0700>{codes} aorta ; <loc0500><loc0010><loc0600><loc1023>{codes} r",
         (300, 400)),
        (f"<loc0900><loc0200><loc0100><loc0700>{codes} flipped box ; {codes} no box ; garbage", (64, 64)),
        (f"<loc0100><loc0200><loc0900><loc0700>{codes[:-8]} 15 codes ; <seg999> ; ", (64, 64)),
        (" ; ".join([f"<loc0000><loc0000><loc1023><loc1023>{codes} x"] * 130), (20, 30)),  # over the cap of 128
        ("", (10, 10)),
    ]  # fmt: skip
    return out


def test_the_vlm_folders_seg_decoder_gives_the_masks_of_mask_tokenizer_without_our_code(tmp_path):
    codec = MaskVQVAE.from_pretrained(str(VLM / "mask_codec")).eval()
    cases = answers(codec)
    (tmp_path / "answers.json").write_text(json.dumps(cases))
    hub_user(f"""
        import json, sys
        import numpy as np
        sys.path.insert(0, {str(VLM)!r})
        from seg_decoder import SegDecoder
        decoder = SegDecoder.from_pretrained({str(VLM)!r})
        out = {{}}
        for i, (text, size) in enumerate(json.load(open("answers.json"))):
            for j, obj in enumerate(decoder.decode(text, tuple(size))):
                out[f"{{i}}_{{j}}"] = obj.mask
                out[f"{{i}}_{{j}}_meta"] = np.array([obj.valid, *obj.box_yxyx])
                out[f"{{i}}_{{j}}_name"] = np.array(obj.name)
        np.savez("theirs.npz", **out)
        """, tmp_path)  # fmt: skip
    theirs = np.load(tmp_path / "theirs.npz")
    tokenizer, seen, valid = MaskTokenizer(codec), 0, 0
    for i, (text, size) in enumerate(cases):
        for j, obj in enumerate(tokenizer.decode(text, size)):
            assert np.array_equal(theirs[f"{i}_{j}"], obj.mask), (i, j, obj.name)
            assert theirs[f"{i}_{j}_meta"].tolist() == [obj.valid, *obj.box_yxyx]
            assert str(theirs[f"{i}_{j}_name"]) == obj.name
            seen, valid = seen + 1, valid + obj.valid
    assert len([k for k in theirs.files if "_" in k and not k.endswith(("_meta", "_name"))]) == seen
    assert valid >= 11 and seen - valid >= 6  # both kinds were compared


def fake_vlm_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "retrained"
    (folder / "mask_codec").mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copy2(VLM / "mask_codec" / name, folder / "mask_codec" / name)
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        (folder / name).write_bytes(b"weights of the lead's new model " + name.encode())
    return folder


def test_rerunning_on_a_retrained_folder_writes_only_the_extras(tmp_path):
    folder = fake_vlm_folder(tmp_path)
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}
    assert model_bundle.main(["--model_dir", str(folder), "--check"]) == 1
    assert sorted(model_bundle.write_bundle(folder)) == ["LICENSE", "answer_contract.py", "seg_decoder.json",
                                                         "seg_decoder.py"]  # fmt: skip
    assert model_bundle.write_bundle(folder) == [] and model_bundle.main(["--model_dir", str(folder), "--check"]) == 0
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in before} == before
    assert (folder / "seg_decoder.py").read_text() == (VLM / "seg_decoder.py").read_text()


def test_push_folder_uploads_the_licence_and_the_standalone_decoder(tmp_path):
    from huggingface_hub.utils import filter_repo_objects

    from chexanatomy.publish import push_folder

    folder = fake_vlm_folder(tmp_path)

    class FakeApi:
        def create_repo(self, *args, **kwargs):
            pass

        def upload_folder(self, folder_path, ignore_patterns, **kwargs):
            local = sorted(str(p.relative_to(folder_path)) for p in Path(folder_path).rglob("*") if p.is_file())
            self.files = list(filter_repo_objects(local, ignore_patterns=ignore_patterns))  # upload_folder's filter
            return "ok"

    api = FakeApi()
    push_folder(folder, "me/tiny-vlm", api=api)
    assert {"LICENSE", "seg_decoder.py", "seg_decoder.json", "answer_contract.py", "model.safetensors"} <= {*api.files}
    assert (folder / "LICENSE").read_text().startswith("\n                                 Apache License")
