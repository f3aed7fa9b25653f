"""The shipped artifacts, used as a Hugging Face user would: without this project installed.

Every check runs in a subprocess whose ``PYTHONPATH`` is empty and whose import system refuses the project's
packages (``chexanatomy``, ``eval``, ``train``, ...; a meta-path blocker installed before anything else runs), so a
snippet that silently needs our code fails here. What runs there:

* every ``python`` block of the bundled model cards that does not import ``chexanatomy``, as written, from a folder
  where the card's model path and ``chest_xray.png`` exist;
* ``segmentation_models_pytorch.from_pretrained`` of the bundled U-Net, whose masks must equal ours;
* ``evaluate.load`` of the metric folder, whose scores must equal ``eval.scores``;
* a ``generate`` with the bundled VLM's defaults, which must finish its answer with ``<eos>``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from chexanatomy.examples import real_radiographs
from chexanatomy.inference import bundled_model_path, load_segmenter

ROOT = Path(__file__).resolve().parents[1]
BLOCKED = ("chexanatomy", "dataset_builder", "train", "eval", "model_card", "space")
# Runs first in every subprocess: the project's packages cannot be imported, whatever is on sys.path or installed.
BLOCKER = f"""
import importlib.abc, sys
class ProjectBlocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ModuleNotFoundError(f"{{name}} is not installed (a Hub user without CheXanatomy)", name=name)
        return None
sys.meta_path.insert(0, ProjectBlocker())
"""


def hub_user(code: str, cwd: Path, timeout: int = 300) -> str:
    """Run ``code`` in a fresh interpreter without our packages (see the module docstring); its stdout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "HF_"))}
    env.update(PYTHONPATH="", HF_HOME=str(cwd / "hf_home"), HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1",
               OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")  # fmt: skip
    script = cwd / "hub_user.py"
    script.write_text(BLOCKER + textwrap.dedent(code))
    # -I: isolated mode (no user site, no PYTHON* variables, no current directory on sys.path)
    done = subprocess.run([sys.executable, "-I", str(script)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip
    assert done.returncode == 0, f"as a Hub user:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return done.stdout


def plain_blocks(card: Path) -> list[str]:
    """The ``python`` code blocks of a card that use only public libraries (no ``chexanatomy`` import)."""
    blocks = re.findall(r"^```python\n(.*?)^```", card.read_text(), flags=re.S | re.M)
    return [b for b in blocks if not re.search(r"^\s*(from|import) chexanatomy", b, flags=re.M)]


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory) -> Path:
    """A working folder holding the card's relative model paths and the ``chest_xray.png`` the snippets open."""
    cwd = tmp_path_factory.mktemp("hub_user")
    for kind in ("unet", "vlm"):
        folder = bundled_model_path(kind)
        link = cwd / folder.relative_to(ROOT)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(folder, target_is_directory=True)
    real_radiographs()["00000001_000"].save(cwd / "chest_xray.png")
    return cwd


@pytest.mark.parametrize("kind", ["unet", "vlm"])
def test_the_model_cards_plain_snippets_run_as_written_without_our_code(user_dir, kind):
    blocks = plain_blocks(bundled_model_path(kind) / "README.md")
    # the VLM's third block (answer contract + seg decoder) is in cards rendered since issue 23 (test below)
    assert len(blocks) in ((1,) if kind == "unet" else (2, 3))
    (user_dir / f"blocks_{kind}.json").write_text(json.dumps(blocks))
    out = hub_user(f"""
        import json
        for block in json.load(open("blocks_{kind}.json")):
            exec(compile(block, "card block", "exec"), {{"__name__": "__main__"}})  # each block on its own
        """, user_dir)  # fmt: skip
    if kind == "vlm":
        assert out.count("<loc") >= 4 and re.search(r"^\S.* \(\d+, \d+, \d+, \d+\)$", out, flags=re.M)
    else:
        h, w = np.asarray(real_radiographs()["00000001_000"]).shape
        assert re.search(rf"^\({h}, {w}\) 0\.\d+", out, flags=re.M), out  # a heart mask at the image's size


def test_smp_loads_the_bundled_unet_and_its_masks_equal_ours(user_dir):
    hub_user("""
        import numpy as np, segmentation_models_pytorch as smp, torch, torch.nn.functional as F
        from PIL import Image
        net = smp.from_pretrained("chexanatomy/assets/models/unet").eval()
        assert type(net).__name__ == "Unet"
        structures, size = net.config["_structures"], net.config["_input_size"]
        image = Image.open("chest_xray.png").convert("L")
        grey = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255)[None, None]
        with torch.no_grad():
            logits = net(F.interpolate(grey, size=(size, size), mode="bilinear", antialias=True))
        logits = F.interpolate(logits, size=(image.height, image.width), mode="bilinear")[0]
        np.savez("smp_masks.npz", **{n: (logits[i] > 0).numpy() for i, n in enumerate(structures)})
        """, user_dir)  # fmt: skip
    theirs = np.load(user_dir / "smp_masks.npz")
    ours = load_segmenter("bundled-unet", device="cpu").segment(real_radiographs()["00000001_000"])
    assert set(theirs.files) == set(ours)
    for name, prediction in ours.items():  # one thread there, several here: a logit at 0 may round either way
        assert (theirs[name] != prediction.mask).sum() <= 1e-4 * prediction.mask.size, name


def test_a_default_generate_of_the_bundled_vlm_ends_in_eos(user_dir):
    out = hub_user("""
        from PIL import Image
        from transformers import AutoModel, AutoModelForImageTextToText, AutoProcessor
        folder = "chexanatomy/assets/models/tiny_vlm"
        model = AutoModelForImageTextToText.from_pretrained(folder)
        processor = AutoProcessor.from_pretrained(folder)
        inputs = processor(text="<image>segment heart", images=Image.open("chest_xray.png").convert("RGB"),
                           return_tensors="pt")
        answer = processor.decode(model.generate(**inputs)[0, inputs["input_ids"].shape[1]:])
        print(repr(answer))
        print(type(AutoModel.from_pretrained(folder)).__name__)
        """, user_dir)  # fmt: skip
    answer, backbone = out.strip().splitlines()[-2:]
    assert answer.endswith("<eos>'") and answer.count("<loc") == 4 and answer.count("<seg") == 16
    assert backbone == "PaliGemmaModel"  # why the cards name AutoModelForImageTextToText, which can generate


def test_the_evaluate_metric_loads_from_its_folder_alone_and_scores_as_eval_does(tmp_path):
    from eval.scores import score_structures

    metric = shutil.copytree(ROOT / "eval" / "metrics" / "anatomy_segmentation", tmp_path / "anatomy_segmentation")
    rng = np.random.default_rng(3)
    refs = [rng.random((24, 32)) < 0.4 for _ in range(3)]
    preds = [refs[0], rng.random((24, 32)) < 0.4, None]
    np.savez(tmp_path / "masks.npz", *refs, *[p for p in preds if p is not None])
    out = hub_user(f"""
        import json, evaluate, numpy as np
        arrays = np.load("masks.npz")
        refs, preds = [arrays[f"arr_{{i}}"] for i in range(3)], [arrays["arr_3"], arrays["arr_4"], None]
        metric = evaluate.load({str(metric)!r})
        result = metric.compute(predictions=preds, references=refs, names=["heart", "heart", "lung_left"],
                                spacing_mm=(0.5, 0.5))
        print(json.dumps(result))
        """, tmp_path)  # fmt: skip
    records = [{"name": n, "pred": p, "ref": r} for n, p, r in zip(["heart", "heart", "lung_left"], preds, refs,
                                                                    strict=True)]  # fmt: skip
    assert json.loads(out.strip().splitlines()[-1]) == json.loads(json.dumps(score_structures(records, (0.5, 0.5))))


def test_the_vlm_card_generates_under_the_answer_contract_and_decodes_masks_with_the_folders_decoder(user_dir):
    """The card as ``python -m model_card`` renders it from the template: its masks block, with our packages blocked.

    It loads ``answer_contract.py`` and ``seg_decoder.py`` from the model folder (``chexanatomy.model_bundle``)
    and prints one valid mask at the image's size per prompted structure.
    """
    from chexanatomy.results import load_results
    from model_card.card import render_card

    folder = Path("chexanatomy/assets/models/tiny_vlm")
    assert (ROOT / folder) == bundled_model_path("vlm")
    card = render_card(load_results(ROOT / "docs" / "eval" / "results.json"), "vlm", ROOT / folder)
    text = str(card).replace(str(ROOT / folder), str(folder))  # the relative path the bundled card shows
    (user_dir / "card_vlm.md").write_text(text)
    blocks = plain_blocks(user_dir / "card_vlm.md")
    assert len(blocks) == 3 and "LogitsProcessorList([contract])" in blocks[2] and "SegDecoder" in blocks[2]
    out = hub_user(blocks[2], user_dir)
    h, w = np.asarray(real_radiographs()["00000001_000"]).shape
    lines = [line for line in out.splitlines() if line.strip()]
    assert [line.split(" True ")[0] for line in lines] == ["left lung", "heart"], out
    assert all(f"True ({h}, {w}) " in line for line in lines), out


def test_the_metric_folder_is_a_hub_module_that_serves_its_widget(tmp_path):
    """The evaluate template's shape (app.py, requirements.txt, sdk/app_file in the card), and the widget answers.

    ``python app.py`` runs from a copy of the folder with our packages blocked; the widget's API is called with a
    predicted and a reference mask (PNG) and must return what ``eval.scores`` gives for them.
    """
    import tomllib

    from gradio_client import handle_file
    from huggingface_hub import SpaceCard
    from packaging.requirements import Requirement
    from PIL import Image
    from test_space_bundle import free_port, wait_for

    from eval.scores import score_structures

    folder = shutil.copytree(ROOT / "eval" / "metrics" / "anatomy_segmentation", tmp_path / "anatomy_segmentation")
    card = SpaceCard.load(folder / "README.md").data
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    gradio = next(r for r in project["optional-dependencies"]["space"] if r.startswith("gradio=="))
    assert card.sdk == "gradio" and card.app_file == "app.py" and gradio == f"gradio=={card.sdk_version}"
    declared = {Requirement(line).name for line in (folder / "requirements.txt").read_text().splitlines()
                if line.strip() and not line.startswith("#")}  # fmt: skip
    imported = set(re.findall(r"^(?:import|from) (\w+)", "".join(p.read_text() for p in folder.glob("*.py")), re.M))
    third_party = imported - set(sys.stdlib_module_names) - {"__future__", "gradio"}  # gradio: the Space's sdk
    assert third_party <= declared, third_party - declared
    assert (folder / "LICENSE").read_bytes() == (ROOT / "LICENSE").read_bytes()

    rng = np.random.default_rng(5)
    pred, ref = rng.random((40, 48)) < 0.5, rng.random((40, 48)) < 0.5
    for name, mask in (("pred", pred), ("ref", ref)):
        Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / f"{name}.png")
    port = free_port()
    (tmp_path / "launch.py").write_text(BLOCKER + textwrap.dedent(f"""
        import runpy, sys
        sys.path.insert(0, {str(folder)!r})
        runpy.run_path({str(folder / "app.py")!r}, run_name="__main__")
        """))  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "HF_", "GRADIO_"))}
    env.update(PYTHONPATH="", HF_HOME=str(tmp_path / "hf_home"), HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False",
               GRADIO_SERVER_PORT=str(port), GRADIO_TEMP_DIR=str(tmp_path / "gradio"), OMP_NUM_THREADS="1")  # fmt: skip
    log = (tmp_path / "app.log").open("w")
    app = subprocess.Popen([sys.executable, "-I", str(tmp_path / "launch.py")], cwd=folder, env=env, stdout=log,
                           stderr=subprocess.STDOUT)  # fmt: skip
    try:
        client = wait_for(f"http://127.0.0.1:{port}/", app, tmp_path / "app.log")
        result = client.predict(handle_file(str(tmp_path / "pred.png")), handle_file(str(tmp_path / "ref.png")),
                                "heart", 0.5, api_name="/score")  # fmt: skip
    finally:
        app.terminate()
        app.wait(timeout=30)
    expected = score_structures([{"name": "heart", "pred": pred, "ref": ref}], (0.5, 0.5))
    assert result == json.loads(json.dumps(expected))
