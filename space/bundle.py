"""Write a self-contained Hugging Face Space folder: the app, the core package, the bundled models and examples.

    python -m space.bundle --output_dir outputs/space
    cd outputs/space && python app.py                      # as Spaces runs it: http://127.0.0.1:7860
    hf upload chexanatomy/demo outputs/space . --repo-type space

The folder holds

* ``app.py`` and the other modules of this folder (``app.py`` imports its folder as the package ``space``), and
  ``examples/``;
* ``chexanatomy/``: the core package with its assets, so the app loads the bundled demonstration models and mask
  codec from the folder (no git install, no Hub model that is not published);
* ``requirements.txt``: the core's and the Space's dependencies (``pyproject.toml``: ``dependencies`` and the
  ``space`` extra), each pinned to the version installed here, which is the version the tests ran;
* ``README.md``: the Space card (``huggingface_hub.SpaceCard``) with ``python_version`` and ``sdk_version`` (the
  pinned gradio), without ``models:`` entries for unpublished models (the bundled ones are in the folder).

Only the app's modules are copied: ``make_examples.py`` and this file build the folder and stay here.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import SpaceCard
from packaging.requirements import Requirement
from packaging.version import Version

import chexanatomy
from chexanatomy.cli import parse_config, prog_name, run_main

SPACE_DIR = Path(__file__).resolve().parent
PYPROJECT = SPACE_DIR.parent / "pyproject.toml"
PYTHON_VERSION = "3.11"  # = requires-python's lower bound: the version the project is tested with
NOT_THE_APP = ("bundle.py", "make_examples.py")  # tools that build the folder's contents, not parts of the app
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")
# An installation puts the parts under the core (chexanatomy/eval, ...): the Space takes the core only.
PARTS = ("dataset_builder", "train", "eval", "model_card", "space")


def space_requirements(pyproject: Path = PYPROJECT) -> list[str]:
    """``name==version`` for the core's dependencies and the ``space`` extra, at the versions installed here.

    Raises:
        importlib.metadata.PackageNotFoundError: when one of them is not installed (the pin would be a guess).
    """
    if pyproject.is_file():  # a checkout
        project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
        names = [Requirement(r).name for r in project["dependencies"] + project["optional-dependencies"]["space"]]
    else:  # an installation: the same lists, from its metadata
        declared = [Requirement(r) for r in importlib.metadata.requires("chexanatomy") or []]
        names = [r.name for r in declared if r.marker is None or r.marker.evaluate({"extra": "space"})]
    # a local build label (2.14.1+cpu) is no PyPI version: pin its public part
    return [f"{n}=={Version(importlib.metadata.version(n)).public}" for n in dict.fromkeys(names)]


def _not_copied(core: Path, folder: str, names: list[str]) -> set[str]:
    """Of ``names`` in ``folder``, those the Space does not get: caches, hidden files, an installation's parts."""
    skipped = set(IGNORED(folder, names))
    return skipped | (set(names) & set(PARTS) if Path(folder) == core else set())


def space_card(requirements: list[str]) -> SpaceCard:
    """The Space card of ``space/README.md`` with ``python_version``, the pinned gradio and no unpublished models."""
    card = SpaceCard.load(SPACE_DIR / "README.md")
    gradio = next(r.split("==")[1] for r in requirements if r.startswith("gradio=="))
    card.data.sdk_version = gradio
    card.data.python_version = PYTHON_VERSION
    card.data.app_file = "app.py"
    card.data.models = None  # the app runs the bundled models of chexanatomy/assets/models
    return card


def write_space(output_dir: str | Path) -> Path:
    """Write the Space folder into ``output_dir`` (created; an existing app or core there is replaced).

    Raises:
        FileExistsError: when ``output_dir`` is this folder or the repository (the copy would overwrite sources).
    """
    out = Path(output_dir).resolve()
    if out == SPACE_DIR or out in SPACE_DIR.parents:
        raise FileExistsError(f"--output_dir {out} would overwrite the sources: pick a new folder")
    out.mkdir(parents=True, exist_ok=True)
    for module in sorted(SPACE_DIR.glob("*.py")):
        if module.name not in NOT_THE_APP:
            shutil.copy2(module, out / module.name)
    core = Path(chexanatomy.__file__).parent
    for folder, target in ((SPACE_DIR / "examples", out / "examples"), (core, out / "chexanatomy")):
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(folder, target, ignore=lambda d, names: _not_copied(core, d, names))
    requirements = space_requirements()
    (out / "requirements.txt").write_text(
        "# Pinned by `python -m space.bundle` to the versions the CheXanatomy tests ran with.\n"
        + "\n".join(requirements) + "\n"
    , encoding="utf-8")  # fmt: skip
    space_card(requirements).save(out / "README.md")
    return out


@dataclass
class BundleOptions:
    """Options of ``python -m space.bundle``."""

    output_dir: str = field(metadata={"help": "The Space folder to write (created; not this repository)."})


def main(argv: list[str] | None = None) -> int:
    """``python -m space.bundle --output_dir DIR``: 0 when written, 2 on a usage error (one line)."""
    return run_main(_main, argv, errors=(FileExistsError, importlib.metadata.PackageNotFoundError))


def _main(argv: list[str]) -> int:
    out = write_space(parse_config(BundleOptions, argv, prog_name("space.bundle"), __doc__).output_dir)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 1e6
    print(f"Space written -> {out} ({size:.0f} MB): cd {out} && python app.py")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
