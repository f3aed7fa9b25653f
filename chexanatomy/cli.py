"""Command-line parsing shared by every entry point: dataclass configs, optionally from a YAML recipe.

Example:
    python -m <package> ... --config recipe.yaml --some_field value   # the command line overrides the recipe
"""

from __future__ import annotations

import yaml
from transformers import HfArgumentParser


def parse_config(config_class, argv: list[str]):
    """Parse ``argv`` into one ``config_class`` instance; ``--config FILE`` supplies YAML defaults."""
    parser = HfArgumentParser(config_class)
    if "--config" in argv:
        i = argv.index("--config")
        with open(argv[i + 1]) as fh:
            parser.set_defaults(**(yaml.safe_load(fh) or {}))
        argv = argv[:i] + argv[i + 2 :]
    return parser.parse_args_into_dataclasses(argv)[0]
