"""Write a self-contained Hugging Face Space folder: the app, the core package, the bundled models and examples.

    python -m space.bundle --output_dir outputs/space                   # a CPU Space (the free hardware)
    python -m space.bundle --output_dir outputs/space --hardware gpu    # a GPU Space: torch's default (CUDA) build
    cd outputs/space && python app.py                      # as Spaces runs it: http://127.0.0.1:7860
    hf upload chexanatomy/demo outputs/space . --repo-type space       # or git push (.gitattributes: LFS/Xet)

The folder holds

* ``app.py`` and the other modules of this folder (``app.py`` imports its folder as the package ``space``), and
  ``examples/``;
* ``chexanatomy/``: the core package with its assets, so the app loads the bundled demonstration models and mask
  codec from the folder (no git install, no Hub model that is not published);
* ``requirements.txt``: the core's and the Space's dependencies (``pyproject.toml``: ``dependencies`` and the
  ``space`` extra), each pinned to the version installed here, which is the version the tests ran. For a CPU Space
  (``--hardware cpu``, the default) torch and torchvision (which segmentation-models-pytorch pulls in) are pinned to
  their CPU builds from PyTorch's CPU index (``+cpu``, ``--extra-index-url``): PyPI's default Linux torch brings
  the CUDA libraries, gigabytes a CPU Space never uses. ``--hardware gpu`` pins the default build instead;
* ``.gitattributes``: every binary file (weights, images, ``.npz`` examples) and every file over 10 MB through Git
  LFS/Xet, without which the Hub refuses a ``git push`` of the folder;
* ``LICENSE``: the project's (``chexanatomy.publish.license_text``);
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
from chexanatomy.publish import license_text

SPACE_DIR = Path(__file__).resolve().parent
PYPROJECT = SPACE_DIR.parent / "pyproject.toml"
PYTHON_VERSION = "3.11"  # = requires-python's lower bound: the version the project is tested with
NOT_THE_APP = ("bundle.py", "make_examples.py")  # tools that build the folder's contents, not parts of the app
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")
# An installation puts the parts under the core (chexanatomy/eval, ...): the Space takes the core only.
PARTS = ("dataset_builder", "train", "eval", "model_card", "space")
HARDWARE = ("cpu", "gpu")
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
TORCH_BUILDS = ("torch", "torchvision")  # one build for both: torchvision's compiled ops are built against torch's
# Binary files through LFS/Xet by name (the Hub's own defaults for these kinds); others are listed by path.
LFS_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.ckpt", "*.npz", "*.npy", "*.png", "*.jpg", "*.jpeg",
                "*.gz", "*.zip", "*.parquet", "*.onnx", "*.h5", "*.msgpack", "*.arrow", "*.tar", "*.tgz")  # fmt: skip
LFS_OVER_BYTES = 10 * 1024 * 1024  # the Hub's limit for a file in plain git


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


def pin_torch_build(requirements: list[str], hardware: str = "cpu") -> list[str]:
    """``requirements`` for a Space of ``hardware``: on ``"cpu"``, torch and torchvision pinned to their CPU builds.

    Returns:
        On ``"cpu"``: ``--extra-index-url`` of PyTorch's CPU wheels first, then the requirements with ``torch==V+cpu``
        and ``torchvision==V+cpu`` (torchvision added at its installed version when only a dependency pulls it in).
        On ``"gpu"``: ``requirements`` unchanged (PyPI's default build, CUDA on Linux).
    """
    if hardware not in HARDWARE:
        raise ValueError(f"hardware must be one of {', '.join(HARDWARE)}, got {hardware!r}")
    if hardware == "gpu":
        return list(requirements)
    names = [r.split("==")[0] for r in requirements]
    extra = [f"{n}=={Version(importlib.metadata.version(n)).public}" for n in TORCH_BUILDS if n not in names]
    pinned = [f"{r}+cpu" if r.split("==")[0] in TORCH_BUILDS else r for r in [*requirements, *extra]]
    return [f"--extra-index-url {CPU_INDEX}", *pinned]


def lfs_files(folder: Path) -> list[str]:
    """``.gitattributes`` lines: ``LFS_PATTERNS`` plus the path of any other binary or large file of ``folder``."""
    lines = [f"{pattern} filter=lfs diff=lfs merge=lfs -text" for pattern in LFS_PATTERNS]
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if not any(path.match(pattern) for pattern in LFS_PATTERNS) and _needs_lfs(path):
            lines.append(f"{path.relative_to(folder).as_posix()} filter=lfs diff=lfs merge=lfs -text")
    return lines


def _needs_lfs(path: Path) -> bool:
    """Over ``LFS_OVER_BYTES``, or binary as git decides it (a NUL byte in the first 8,000 bytes)."""
    if path.stat().st_size > LFS_OVER_BYTES:
        return True
    with path.open("rb") as fh:
        return b"\0" in fh.read(8000)


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


def write_space(output_dir: str | Path, hardware: str = "cpu") -> Path:
    """Write the Space folder into ``output_dir`` (created; an existing app or core there is replaced).

    ``hardware``: ``"cpu"`` or ``"gpu"``, the Space's hardware, which decides the torch build (``pin_torch_build``).

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
        f"# Pinned by `python -m space.bundle --hardware {hardware}` to the versions the CheXanatomy tests ran with.\n"
        + "\n".join(pin_torch_build(requirements, hardware)) + "\n"
    , encoding="utf-8")  # fmt: skip
    space_card(requirements).save(out / "README.md")
    (out / "LICENSE").write_text(license_text(), encoding="utf-8")
    (out / ".gitattributes").write_text(
        "# Written by `python -m space.bundle`: binary and large files go through Git LFS/Xet.\n"
        + "\n".join(lfs_files(out)) + "\n"
    , encoding="utf-8")  # fmt: skip
    return out


@dataclass
class BundleOptions:
    """Options of ``python -m space.bundle``."""

    output_dir: str = field(metadata={"help": "The Space folder to write (created; not this repository)."})
    hardware: str = field(
        default="cpu", metadata={"help": "The Space's hardware: cpu (torch's CPU build) or gpu (its default build).",
                                 "choices": list(HARDWARE)},
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """``python -m space.bundle --output_dir DIR``: 0 when written, 2 on a usage error (one line)."""
    return run_main(_main, argv, errors=(FileExistsError, importlib.metadata.PackageNotFoundError))


def _main(argv: list[str]) -> int:
    options = parse_config(BundleOptions, argv, prog_name("space.bundle"), __doc__)
    out = write_space(options.output_dir, options.hardware)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 1e6
    print(f"Space written -> {out} ({size:.0f} MB): cd {out} && python app.py")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
