"""Command line of the corpus builder: ``build`` renders a corpus, ``card`` rewrites a built corpus's README.md.

Examples:
    python -m dataset_builder build --source embedded --output_dir outputs/drr
    python -m dataset_builder build --config dataset_builder/recipes/embedded.yaml --size_px 256
    python -m dataset_builder card --output_dir outputs/drr
    python -m dataset_builder build --help        # every option of a command
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from chexanatomy.cli import UsageError, parse_config, prog_name, run_main  # noqa: E402

from .build import BuildConfig, build, format_summary, rewrite_card  # noqa: E402

# A build that cannot start: bad flags or recipe, missing --root/CSV/codec, a folder in use or built otherwise. The
# per-subject errors never get here (they are failures.jsonl lines).
USAGE_ERRORS = (ValueError, OSError)
COMMANDS = {"build": "render a corpus (BuildConfig)", "card": "rewrite the README.md of a built corpus"}


@dataclass
class CardCommand:
    """Options of ``python -m dataset_builder card``."""

    output_dir: str = field(metadata={"help": "The built corpus folder whose README.md is rewritten."})


def main(argv: list[str] | None = None) -> int:
    """``python -m dataset_builder`` / ``chexanatomy-build``: the exit status of the command.

    0 when at least one subject is in the corpus (or the card was written, or help shown), 1 when no subject
    succeeded, 2 on usage errors: one line on stderr (``error: ...``), never a traceback.
    """
    return run_main(_main, argv, errors=USAGE_ERRORS)


def usage() -> str:
    """The commands, for ``--help`` and for a missing or unknown command."""
    prog = prog_name("dataset_builder")
    lines = [f"usage: {prog} {{{','.join(COMMANDS)}}} [--flags]   ({prog} COMMAND --help lists the flags)", ""]
    return "\n".join(lines + [f"  {name:<6} {text}" for name, text in COMMANDS.items()])


def _main(argv: list[str]) -> int:
    command, rest = (argv[0], argv[1:]) if argv else (None, [])
    if command in ("-h", "--help"):
        print(__doc__.strip() + "\n\n" + usage())
        return 0
    if command not in COMMANDS:
        said = f"unknown command {command!r}" if command else "no command"
        raise UsageError(f"{said}: choose one of {', '.join(COMMANDS)} (python -m dataset_builder --help)")
    prog = f"{prog_name('dataset_builder')} {command}"
    if command == "card":
        print(f"wrote {rewrite_card(parse_config(CardCommand, rest, prog, __doc__).output_dir)}")
        return 0
    config = parse_config(BuildConfig, rest, prog, __doc__)
    s = build(config)
    for failure in s["failures"]:
        print(f"skipped {failure['subject_id']}: {failure['reason']}")
    print(format_summary(s, config.output_dir))
    return 0 if s["built"] + s["resumed_skipped"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
