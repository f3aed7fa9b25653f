"""Command line of the corpus builder.

    python -m dataset_builder build --source embedded --output_dir outputs/drr
    python -m dataset_builder build --config recipes/embedded.yaml --size_px 256
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from transformers import HfArgumentParser  # noqa: E402

from .build import BuildConfig, build  # noqa: E402


def make_parser() -> HfArgumentParser:
    return HfArgumentParser(BuildConfig)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] != "build":
        print("usage: python -m dataset_builder build [--flags]   (see: python -m dataset_builder build --help)")
        return 2
    argv = argv[1:]
    parser = make_parser()
    if "--config" in argv:
        i = argv.index("--config")
        (config,) = parser.parse_yaml_file(argv[i + 1]) if not argv[i + 2 :] and not argv[:i] else (None,)
        if config is None:  # YAML recipe plus CLI overrides: the CLI wins
            import yaml

            with open(argv[i + 1]) as fh:
                defaults = yaml.safe_load(fh) or {}
            parser.set_defaults(**defaults)
            (config,) = parser.parse_args_into_dataclasses(argv[:i] + argv[i + 2 :])
    else:
        (config,) = parser.parse_args_into_dataclasses(argv)
    s = build(config)
    print(
        f"built {s['built']} subjects ({s['images']} images), skipped {s['resumed_skipped']} already built, "
        f"in {s['seconds']} s -> {config.output_dir}" + (f"; pushed {s['pushed']}" if "pushed" in s else "")
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
