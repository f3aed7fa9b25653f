"""What `pip install .` puts on a user's machine: one top-level package, no test tool, console scripts that resolve.

The wheel is built (offline, no build isolation) from a copy of the tracked files without the large model weights,
which change nothing in the layout and would only slow the build.
"""

import ast
import hashlib
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("dataset_builder", "train", "eval", "model_card", "space")
TEST_TOOLS = {"pytest", "hypothesis", "ruff", "playwright"}
SCRIPTS = {"chexanatomy-build", "chexanatomy-train", "chexanatomy-train-unet", "chexanatomy-train-codec",
           "chexanatomy-eval", "chexanatomy-card", "chexanatomy-space"}  # fmt: skip


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("wheel")
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, tracked.decode().split("\0")):
        path = ROOT / name
        if path.is_file() and path.stat().st_size < 1_000_000:
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, source / name)
    shutil.copy2(ROOT / "pyproject.toml", source / "pyproject.toml")  # also when edited and not yet committed
    build = f"from setuptools import build_meta; print(build_meta.build_wheel({str(out)!r}))"
    name = subprocess.run([sys.executable, "-c", build], cwd=source, capture_output=True, text=True, check=True)
    wheel = zipfile.ZipFile(out / name.stdout.strip().splitlines()[-1])
    wheel.build_log = name.stderr  # setuptools' warnings
    return wheel


def metadata(wheel: zipfile.ZipFile, file: str) -> str:
    return next(wheel.read(n).decode() for n in wheel.namelist() if n.endswith(f".dist-info/{file}"))


def test_the_wheel_claims_only_the_name_chexanatomy(wheel):
    top = {n.split("/")[0] for n in wheel.namelist() if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"chexanatomy"}
    names = set(wheel.namelist())
    for part in PARTS:  # every part is installed under chexanatomy/, with its data files
        assert any(n.startswith(f"chexanatomy/{part}/") and n.endswith(".py") for n in names), part
    assert {"chexanatomy/dataset_builder/templates/dataset_card.md", "chexanatomy/model_card/templates/model_card.md",
            "chexanatomy/train/recipes/tiny.yaml"} <= names  # fmt: skip
    assert any(n.startswith("chexanatomy/eval/metrics/anatomy_segmentation/") for n in names)


def test_installing_pulls_no_test_tool(wheel):
    requirements = [Requirement(line.split(":", 1)[1].strip()) for line in metadata(wheel, "METADATA").splitlines()
                    if line.startswith("Requires-Dist:")]  # fmt: skip
    core = {r.name.lower() for r in requirements if r.marker is None}
    assert not core & TEST_TOOLS and {"torch", "transformers", "segmentation-models-pytorch"} <= core
    for extra in ("build", "train", "eval", "space"):
        pulled = {r.name.lower() for r in requirements if r.marker is not None and r.marker.evaluate({"extra": extra})}
        assert pulled and not pulled & TEST_TOOLS, extra
    dev = {r.name.lower() for r in requirements if r.marker is not None and r.marker.evaluate({"extra": "dev"})}
    assert TEST_TOOLS <= dev
    pinned = {r.name for r in requirements if any(s.operator == "==" for s in r.specifier)}
    assert pinned == {"gradio"}  # its internal is replaced (test_pinned_internals.py); other pins: requirements.txt


def test_every_console_script_names_a_main_of_a_part(wheel):
    scripts = dict(
        line.split(" = ") for line in metadata(wheel, "entry_points.txt").split("[console_scripts]")[1].splitlines()
        if " = " in line
    )  # fmt: skip
    assert set(scripts) == SCRIPTS
    from chexanatomy import scripts as launcher

    assert set(launcher.SCRIPTS) == SCRIPTS
    for script, target in scripts.items():  # each runs chexanatomy.scripts.launch(script) (tests/test_console_scripts)
        module, function = target.split(":")
        assert module == "chexanatomy.scripts" and getattr(launcher, function).__doc__.startswith(f"``{script}``")
        path = launcher.SCRIPTS[script][0].removeprefix("chexanatomy.").replace(".", "/") + ".py"
        tree = ast.parse((ROOT / path).read_text())
        assert "main" in {f.name for f in tree.body if isinstance(f, ast.FunctionDef)}, script


def test_a_part_imports_its_own_modules_relatively_and_no_other_part():
    """Absolute imports of `eval`, `train`, ... would work in a checkout and break once installed (chexanatomy.eval).

    space/make_examples.py is a repository tool (it exports corpus images as the Space's examples, from a checkout)
    and is not part of the app or of the Space bundle.
    """
    offenders = []
    for part in PARTS:
        for path in sorted(p for p in (ROOT / part).rglob("*.py") if p != ROOT / "space" / "make_examples.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in PARTS]
    assert offenders == []


def _part_imports(tree: ast.AST) -> list[int]:
    """Line numbers of the absolute imports of a part (``dataset_builder``, ``train``, ...) in ``tree``."""
    lines = []
    for node in ast.walk(tree):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        lines += [node.lineno for n in names if n.split(".")[0] in PARTS]
    return lines


def test_bench_scripts_find_the_parts_when_run_as_files():
    """`python bench/x.py` has bench/ on sys.path, not the checkout: since the parts install as chexanatomy.<part>,
    a bench script that imports a part must first `import checkout` (bench/checkout.py puts the checkout on the path).
    """
    offenders = []
    for path in sorted((ROOT / "bench").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        part_lines = _part_imports(tree)
        checkout = [n.lineno for n in tree.body if isinstance(n, ast.Import) and n.names[0].name == "checkout"]
        if part_lines and not (checkout and checkout[0] < min(part_lines)):
            offenders.append(path.name)
    assert offenders == []


def test_a_bench_script_runs_as_a_file_from_a_clean_environment(tmp_path):
    """The real thing once: the script as a file, from another directory, without PYTHONPATH."""
    env = {k: v for k, v in __import__("os").environ.items() if k != "PYTHONPATH"}
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_scale.py"), "--help"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]


def test_requirements_txt_stays_the_pinned_development_environment():
    pins = {Requirement(line.split("#")[0]).name: line for line in (ROOT / "requirements.txt").read_text().splitlines()
            if line.split("#")[0].strip()}  # fmt: skip
    assert "==" in pins["torch"] and "==" in pins["torchvision"] and TEST_TOOLS <= set(pins)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "dependencies" not in project.get("dynamic", [])


def test_the_wheel_carries_the_licence_and_the_project_metadata(wheel):
    """PEP 639: an SPDX expression and the licence file itself; where the project lives; what it is about."""
    meta = metadata(wheel, "METADATA").splitlines()
    assert "License-Expression: Apache-2.0" in meta and "License-File: LICENSE" in meta
    licence = next(n for n in wheel.namelist() if n.endswith(".dist-info/licenses/LICENSE"))
    assert wheel.read(licence) == (ROOT / "LICENSE").read_bytes() and b"Apache License" in wheel.read(licence)
    urls = [line for line in meta if line.startswith("Project-URL: ")]
    assert {u.split(": ")[1].split(",")[0] for u in urls} >= {"Homepage", "Repository", "Issues"}
    classifiers = [line for line in meta if line.startswith("Classifier: ")]
    assert "Classifier: Topic :: Scientific/Engineering :: Medical Science Apps." in classifiers
    assert not any(c.startswith("Classifier: License ::") for c in classifiers)  # superseded by License-Expression
    assert "license" not in wheel.build_log.lower(), wheel.build_log  # no deprecation of `project.license` as a table


def test_the_wheel_stores_each_file_once(wheel):
    """No two entries with the same bytes (the model folders' copies of the codec and the cards' plots stay out)."""
    by_content = {}
    for name in wheel.namelist():
        data = wheel.read(name)
        if len(data) > 100_000:
            by_content.setdefault(hashlib.sha256(data).hexdigest(), []).append(name)
    assert [names for names in by_content.values() if len(names) > 1] == []
    assert not any("/plots/" in n or n.startswith("chexanatomy/assets/models/tiny_vlm/mask_codec/")
                   for n in wheel.namelist())  # fmt: skip


def test_the_bundled_vlm_without_its_codec_folder_decodes_with_the_core_codec_it_carries():
    """Installed, the VLM folder has no mask_codec/ (not stored twice), so it loads the core codec: the same one."""
    vlm_codec = ROOT / "chexanatomy" / "assets" / "models" / "tiny_vlm" / "mask_codec"
    core_codec = ROOT / "chexanatomy" / "assets" / "mask_codec"
    for name in ("config.json", "model.safetensors"):
        assert (vlm_codec / name).read_bytes() == (core_codec / name).read_bytes(), (
            f"{name}: the bundled VLM has its own codec now: ship its mask_codec/ in the wheel (package-data)")


def test_the_space_finds_the_real_examples_in_the_core_when_installed_without_its_copies(tmp_path):
    import json

    from space.bundled_examples import file_sha256, load_examples

    shutil.copytree(ROOT / "space" / "examples", tmp_path / "examples", ignore=shutil.ignore_patterns("real_*"))
    examples = load_examples(tmp_path / "examples")
    entries = json.loads((tmp_path / "examples" / "examples.json").read_text())["examples"]
    assert [e.label for e in examples] == [e.label for e in load_examples(ROOT / "space" / "examples")]
    for example, entry in zip(examples, entries, strict=True):
        assert file_sha256(example.image) == entry["sha256"]
