"""The ``chexanatomy-*`` console scripts: each imports its part when run, so a missing extra is one line.

``pip install chexanatomy`` installs every script, but a part's libraries come with its extra
(``pip install 'chexanatomy[build]'``, ...). Each script here imports its part's ``main`` and runs it; when a library
of the extra is missing:

* ``--help`` still answers: the part's docstring (read from its file, not imported) and the extra to install;
* anything else is one line on stderr, ``error: chexanatomy-build needs the 'build' extra (...): pip install ...``,
  exit status 2 (the project's status for an error the user can fix).

Example:
    chexanatomy-build --help        # works with or without chexanatomy[build]
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
from collections.abc import Callable

# script -> (module of its main, the extra that brings its libraries, what it does)
SCRIPTS = {
    "chexanatomy-build": ("chexanatomy.dataset_builder.__main__", "build", "render a DRR corpus from chest CTs"),
    "chexanatomy-train": ("chexanatomy.train.sft", "train", "fine-tune a PaliGemma model on a corpus"),
    "chexanatomy-train-unet": ("chexanatomy.train.unet", "train", "train the U-Net baseline on a corpus"),
    "chexanatomy-train-codec": ("chexanatomy.train.codec", "train", "train the anatomy mask codec (VQ-VAE)"),
    "chexanatomy-eval": ("chexanatomy.eval.__main__", "eval", "evaluate models on a corpus and real radiographs"),
    "chexanatomy-card": ("chexanatomy.model_card.__main__", "eval", "write a model card from evaluation results"),
    "chexanatomy-space": ("chexanatomy.space.app", "space", "run the Gradio demo"),
}
# A library that belongs to another extra than the script's own (imported only for some options).
EXTRA_OF_MODULE = {"ray": "ray"}


def launch(script: str, argv: list[str] | None = None) -> int:
    """Run ``script``'s ``main`` (with ``argv``, default the command line); its exit status.

    Returns:
        The status of ``main``; when a library of the script's extra is missing, 0 after ``--help`` and 2 otherwise.
    """
    module, extra, _ = SCRIPTS[script]
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        main = importlib.import_module(module).main
        return main(args)
    except ModuleNotFoundError as err:
        missing = (err.name or "").split(".")[0]
        if not missing or missing == "chexanatomy":  # our own code is broken: not a missing extra
            raise
        extra = EXTRA_OF_MODULE.get(missing, extra)
        install = f"pip install 'chexanatomy[{extra}]'"
        if any(a in ("-h", "--help") for a in args):
            print(f"usage: {script} [--flags]\n\n{part_docstring(script)}\n\n"
                  f"The flags are listed once the '{extra}' extra is installed (module {missing!r} is missing): "
                  f"{install}")  # fmt: skip
            return 0
        print(f"error: {script} needs the '{extra}' extra (module {missing!r} is missing): {install}", file=sys.stderr)
        return 2


def part_docstring(script: str) -> str:
    """The docstring of ``script``'s module, read from its file without running it (else what the script does)."""
    module, _, summary = SCRIPTS[script]
    try:
        spec = importlib.util.find_spec(module)
        with open(spec.origin, encoding="utf-8") as fh:
            return (ast.get_docstring(ast.parse(fh.read())) or summary).strip()
    except (ImportError, AttributeError, TypeError, OSError, SyntaxError):  # e.g. the part's __init__ needs the extra
        return f"{script}: {summary}."


def _script(name: str) -> Callable[[], int]:
    """The console-script function of ``name`` (``pyproject.toml``'s ``[project.scripts]`` names these)."""

    def run() -> int:
        return launch(name)

    run.__name__ = run.__qualname__ = name.removeprefix("chexanatomy-").replace("-", "_")
    run.__doc__ = f"``{name}``: {SCRIPTS[name][2]} (``{SCRIPTS[name][0]}.main``)."
    return run


build = _script("chexanatomy-build")
train = _script("chexanatomy-train")
train_unet = _script("chexanatomy-train-unet")
train_codec = _script("chexanatomy-train-codec")
evaluate = _script("chexanatomy-eval")
card = _script("chexanatomy-card")
space = _script("chexanatomy-space")
