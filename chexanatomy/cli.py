"""The one command line of every entry point: dataclass options, a YAML recipe, one-line usage errors.

Every ``python -m ...`` (and its ``chexanatomy-*`` console script) parses through ``parse_config``, an
``HfArgumentParser`` (the parser TRL's ``TrlParser`` extends) with the same rules everywhere:

* every field of the option dataclasses is a ``--flag`` (``--help`` lists them, and ``--config``);
* ``--config FILE`` reads a YAML recipe whose keys are those options; flags given on the command line override
  the recipe; an ``env:`` mapping in the recipe sets environment variables (as ``TrlParser`` does);
* a recipe key that is not an option, an unknown flag or a bad value is a usage error: one line on stderr
  (``error: ...``) and exit status 2, never a traceback (``run_main``);
* publishing is spelled as TRL spells it: ``--push_to_hub true --hub_model_id OWNER/NAME`` (``HubOptions``).

Example:
    python -m train.unet --config train/recipes/unet_bundled.yaml --max_steps 10   # the flag overrides the recipe
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from transformers import HfArgumentParser

# Input that is not there: a mistyped folder, or a Hub id that cannot be reached (offline, or not cached). Entry
# points that read a corpus or a model report these as usage errors (one line, exit 2).
MISSING_INPUT = (FileNotFoundError, ConnectionError)


class UsageError(ValueError):
    """Input a user can fix (a flag, a recipe, a path): shown as one line ``error: ...``, exit status 2."""


class ShowedHelp(Exception):  # noqa: N818 (not an error: ``--help`` was answered)
    """``--help`` was printed; the entry point returns 0."""


@dataclass
class HubOptions:
    """Publishing options, spelled as TRL's ``SFTConfig`` spells them (``--push_to_hub true --hub_model_id ID``)."""

    push_to_hub: bool = field(default=False, metadata={"help": "Upload the result to the Hub (--hub_model_id)."})
    hub_model_id: str | None = field(default=None, metadata={"help": "Hub repository to upload to: owner/name."})
    hub_private_repo: bool = field(default=False, metadata={"help": "Create the Hub repository as private."})

    def __post_init__(self):
        check_hub_options(self)


def check_hub_options(options) -> None:
    """``UsageError`` when ``options.push_to_hub`` is set without ``options.hub_model_id`` (any config class)."""
    if getattr(options, "push_to_hub", False) and not getattr(options, "hub_model_id", None):
        raise UsageError("--push_to_hub true needs --hub_model_id OWNER/NAME (the Hub repository to upload to)")


class ConfigParser(HfArgumentParser):
    """``HfArgumentParser`` with ``--config FILE`` and usage errors raised as ``UsageError`` (never ``sys.exit``)."""

    def __init__(self, dataclass_types, prog: str | None = None, description: str | None = None):
        super().__init__(
            dataclass_types, prog=prog, description=description, allow_abbrev=False,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )  # fmt: skip
        self.add_argument(
            "--config", metavar="FILE", default=None,
            help="YAML recipe whose keys are the options below; flags on the command line override it.",
        )  # fmt: skip

    def error(self, message: str):
        """The parser's own errors (a bad value, a missing argument) as a ``UsageError``, not an exit."""
        raise UsageError(message)

    def exit(self, status: int = 0, message: str | None = None):
        """``--help`` prints and ends here; anything else argparse ends with is a usage error."""
        if status == 0:
            raise ShowedHelp()
        raise UsageError((message or "").strip() or f"exit status {status}")

    def options(self) -> set[str]:
        """The names a recipe may use: every option's destination, ``--config`` and ``--help`` excepted."""
        return {a.dest for a in self._actions if a.dest not in ("help", "config")}

    def parse(self, argv: Sequence[str]) -> tuple:
        """One instance per dataclass, from the recipe of ``--config`` (if any) overridden by ``argv``.

        Raises:
            UsageError: on an unknown flag, a bad value, an unreadable recipe, a recipe key that is not an option,
                or a ``ValueError`` of a dataclass's own checks.
            ShowedHelp: after printing ``--help``.
        """
        argv = list(argv)
        recipe_path = _config_path(argv)
        if recipe_path is not None:
            self.set_defaults(**self.read_recipe(recipe_path))
        _, remaining = self.parse_known_args(argv)  # flags first: before any dataclass's own checks run
        if remaining:
            raise UsageError(f"unrecognised arguments: {' '.join(remaining)} (see --help)")
        try:
            outputs = self.parse_args_into_dataclasses(argv)
        except ValueError as err:  # a dataclass's __post_init__ check
            raise UsageError(str(err)) from None
        return tuple(outputs[: len(self.dataclass_types)])

    def read_recipe(self, path: str) -> dict:
        """The options of the YAML recipe at ``path``; its ``env:`` mapping is set in ``os.environ``."""
        try:
            recipe = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as err:
            raise UsageError(f"--config {path}: cannot read it ({type(err).__name__}: {one_line(err)})") from None
        if recipe is None:
            return {}
        if not isinstance(recipe, dict):
            raise UsageError(f"--config {path}: a recipe is a YAML mapping of option: value")
        env = recipe.pop("env", None) or {}
        if not isinstance(env, dict):
            raise UsageError(f"--config {path}: env must be a mapping of variable: value")
        unknown = sorted(set(recipe) - self.options())
        if unknown:
            raise UsageError(f"--config {path}: {', '.join(unknown)} not an option here (see --help)")
        os.environ.update({str(k): str(v) for k, v in env.items()})
        return recipe


def _config_path(argv: list[str]) -> str | None:
    """The value of ``--config FILE`` or ``--config=FILE`` in ``argv`` (left there: the parser accepts it too)."""
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
        if arg == "--config":
            if i + 1 >= len(argv):
                raise UsageError("--config needs a FILE (a YAML recipe)")
            return argv[i + 1]
    return None


def prog_name(module: str) -> str:
    """How the user called the entry point: its console script (``chexanatomy-train``) or ``python -m module``."""
    script = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return script if script.startswith("chexanatomy-") else f"python -m {module}"


def parse_config(config_classes, argv: Sequence[str], prog: str | None = None, description: str | None = None):
    """Parse ``argv`` (with ``--config FILE`` YAML defaults) into the option dataclasses.

    Args:
        config_classes: one dataclass, or a tuple of them (e.g. ``(AnatomyArguments, SFTConfig)``).
        argv: the arguments, without the program name.
        prog: the program name ``--help`` and errors show.
        description: the text ``--help`` shows above the options (the module's docstring).

    Returns:
        The one instance, or a tuple of instances when ``config_classes`` is a tuple.

    Raises:
        UsageError, ShowedHelp: see ``ConfigParser.parse``; ``run_main`` turns them into exit statuses.
    """
    several = isinstance(config_classes, tuple | list)
    parser = ConfigParser(tuple(config_classes) if several else (config_classes,), prog, description)
    parsed = parser.parse(argv)
    return parsed if several else parsed[0]


def run_main(body: Callable[[list[str]], int], argv: Sequence[str] | None, errors: tuple = ()) -> int:
    """Run an entry point's ``body(argv)`` (default ``sys.argv[1:]``) and return its exit status.

    ``--help`` returns 0; a ``UsageError``, or one of ``errors`` (the entry point's own usage errors, e.g. a
    missing model folder), is one line ``error: ...`` on stderr and returns 2.
    """
    try:
        return body(list(sys.argv[1:] if argv is None else argv))
    except ShowedHelp:
        return 0
    except (UsageError, *errors) as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2


def one_line(err: BaseException) -> str:
    """The message of ``err`` on one line (a ``KeyError``'s quotes removed)."""
    text = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
    return " ".join(str(text).split()) or type(err).__name__
