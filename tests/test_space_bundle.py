"""`python -m space.bundle`: a Space folder that runs on its own and answers `/segment`.

The app is started from the written folder as Spaces starts it (``python app.py`` there) with ``PYTHONPATH`` empty
and an import blocker: ``chexanatomy`` and ``space`` may only come from the folder, the other parts not at all.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from huggingface_hub import SpaceCard
from packaging.requirements import Requirement

from space.bundle import main, space_requirements

ROOT = Path(__file__).resolve().parents[1]
# Runs before app.py: the repository's packages are unreachable; chexanatomy resolves in the Space folder only.
LAUNCHER = """
import importlib.abc, importlib.machinery, runpy, sys
from pathlib import Path
SPACE = Path(sys.argv[1]).resolve()
class OnlyTheSpaceFolder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top in ("dataset_builder", "train", "eval", "model_card"):
            raise ModuleNotFoundError(f"{name}: not part of the Space", name=name)
        if top in ("chexanatomy", "space") and path is None:
            spec = importlib.machinery.PathFinder.find_spec(name, [str(SPACE)])
            if spec is None:
                raise ModuleNotFoundError(f"{name} is not in the Space folder {SPACE}", name=name)
            return spec
        return None
sys.meta_path.insert(0, OnlyTheSpaceFolder())
sys.path[0] = str(SPACE)
sys.argv = ["app.py", *sys.argv[2:]]
runpy.run_path(str(SPACE / "app.py"), run_name="__main__")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def space(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("space") / "demo"
    assert main(["--output_dir", str(out)]) == 0
    return out


def test_the_folder_holds_app_core_models_examples_requirements_and_card(space):
    names = {p.name for p in space.iterdir()}
    assert {"app.py", "__init__.py", "ui.py", "README.md", "requirements.txt", "examples", "chexanatomy"} <= names
    assert not {"bundle.py", "make_examples.py"} & names  # tools that build the folder are not the app
    for model in ("unet", "tiny_vlm"):
        assert (space / "chexanatomy" / "assets" / "models" / model / "model.safetensors").is_file()
    assert list((space / "examples").glob("*.png"))
    requirements = [Requirement(line) for line in (space / "requirements.txt").read_text().splitlines()
                    if line and not line.startswith(("#", "--"))]  # fmt: skip
    assert all(len(r.specifier) == 1 and next(iter(r.specifier)).operator == "==" for r in requirements)
    assert {"gradio", "torch", "transformers", "segmentation-models-pytorch"} <= {r.name for r in requirements}
    assert not any("git+" in str(r) or r.url for r in requirements)  # everything from PyPI
    card = SpaceCard.load(space / "README.md").data
    assert card.python_version == "3.11" and card.app_file == "app.py" and card.sdk == "gradio"
    assert f"gradio=={card.sdk_version}" in space_requirements() and not card.get("models")


def test_a_git_push_of_the_folder_sends_binaries_through_lfs_and_a_cpu_space_gets_cpu_torch(space, tmp_path):
    """The Hub refuses binary files (and files over 10 MB) in plain git; PyPI's Linux torch brings CUDA to a CPU box."""
    import fnmatch

    lfs = [line.split()[0] for line in (space / ".gitattributes").read_text().splitlines()
           if line.endswith("filter=lfs diff=lfs merge=lfs -text")]  # fmt: skip
    binaries = [p for p in space.rglob("*") if p.is_file() and (p.stat().st_size > 10 * 1024 * 1024
                                                               or b"\0" in p.read_bytes()[:8000])]  # fmt: skip
    assert any(p.stat().st_size > 10 * 1024 * 1024 for p in binaries) and any(p.suffix == ".png" for p in binaries)
    for path in binaries:  # git's rule: a pattern without "/" matches the file name anywhere
        rel = path.relative_to(space).as_posix()
        assert any(fnmatch.fnmatch(path.name if "/" not in pat else rel, pat) for pat in lfs), rel
    lines = (space / "requirements.txt").read_text().splitlines()
    torch, vision = (next(line for line in lines if line.startswith(f"{n}==")) for n in ("torch", "torchvision"))
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in lines
    assert torch.endswith("+cpu") and vision.endswith("+cpu")
    assert (space / "LICENSE").read_bytes() == (ROOT / "LICENSE").read_bytes()
    gpu = tmp_path / "gpu"
    assert main(["--output_dir", str(gpu), "--hardware", "gpu"]) == 0
    gpu_lines = (gpu / "requirements.txt").read_text().splitlines()
    assert not any(line.startswith("--") or "+cpu" in line for line in gpu_lines)
    assert torch.removesuffix("+cpu") in gpu_lines


def test_the_bundle_refuses_to_overwrite_the_sources(capsys):
    assert main(["--output_dir", str(ROOT / "space")]) == 2
    assert "would overwrite the sources" in capsys.readouterr().err
    assert main([]) == 2 and "output_dir" in capsys.readouterr().err


def test_the_app_runs_from_the_folder_alone_and_answers_segment(space, tmp_path):
    from gradio_client import handle_file

    launcher = tmp_path / "launch.py"
    launcher.write_text(textwrap.dedent(LAUNCHER))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "GRADIO_"))}
    env.update(PYTHONPATH="", HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False", OMP_NUM_THREADS="1",
               HF_HOME=str(tmp_path / "hf_home"), GRADIO_TEMP_DIR=str(tmp_path / "gradio"))  # fmt: skip
    log = (tmp_path / "app.log").open("w")
    app = subprocess.Popen([sys.executable, "-s", "-E", str(launcher), str(space), "--port", str(port)],
                           cwd=space, env=env, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        client = wait_for(f"http://127.0.0.1:{port}/", app, tmp_path / "app.log")
        example = next(p for p in sorted((space / "examples").glob("pa_*.png")))
        vlm, unet, table, answers, timing, notes = client.predict(
            handle_file(str(example)), [], ["heart", "lung_left"], api_name="/segment"
        )  # fmt: skip
        assert [row[0] for row in table["data"]] == ["left lung", "heart"]
        assert Path(unet["image"]).exists() and Path(vlm["image"]).exists()
        assert answers.startswith("left lung: ") and "U-Net" in timing
    finally:
        app.terminate()
        app.wait(timeout=30)
    assert str(ROOT) not in (tmp_path / "app.log").read_text(errors="replace")  # nothing of the repository touched


def wait_for(url: str, app: subprocess.Popen, log: Path, seconds: float = 240):
    """A gradio_client ``Client`` of the app at ``url`` once it answers; fails with the app's log if it exits."""
    from gradio_client import Client

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if app.poll() is not None:
            pytest.fail(f"the Space exited with {app.returncode}:\n{log.read_text()[-3000:]}")
        try:
            return Client(url, verbose=False)
        except Exception:  # not listening yet
            time.sleep(1)
    pytest.fail(f"the Space did not answer within {seconds} s:\n{log.read_text()[-3000:]}")
