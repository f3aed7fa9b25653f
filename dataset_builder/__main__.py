"""Command line of the corpus builder.

Examples:
    python -m dataset_builder build --source embedded --output_dir outputs/drr
    python -m dataset_builder build --config dataset_builder/recipes/embedded.yaml --size_px 256
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from chexanatomy.cli import parse_config  # noqa: E402

from .build import BuildConfig, build, rewrite_card  # noqa: E402

# A build that cannot start: bad flags or recipe, missing --root/CSV/codec, a folder in use or built otherwise. The
# per-subject errors never get here (they are failures.jsonl lines).
USAGE_ERRORS = (ValueError, OSError)


def main(argv: list[str] | None = None) -> int:
    """Returns 0 when at least one subject is in the corpus, 1 when none succeeded, 2 on usage errors.

    A usage error is one line on stderr (``error: ...``), never a traceback.
    """
    try:
        return _main(list(sys.argv[1:] if argv is None else argv))
    except USAGE_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _main(argv: list[str]) -> int:
    if argv[:1] == ["card"] and argv[1:2] == ["--output_dir"] and len(argv) == 3:
        print(f"wrote {rewrite_card(argv[2])}")
        return 0
    if not argv or argv[0] != "build":
        print("usage: python -m dataset_builder build [--flags]   (python -m dataset_builder build --help)\n"
              "       python -m dataset_builder card --output_dir DIR")  # fmt: skip
        return 2
    config = parse_config(BuildConfig, argv[1:])
    s = build(config)
    for failure in s["failures"]:
        print(f"skipped {failure['subject_id']}: {failure['reason']}")
    print(
        f"{s['subjects']} subjects: built {s['built']} ({s['images']} images), "
        f"skipped {s['resumed_skipped']} already built, "
        f"{s['failed']} failed, in {s['seconds']} s (read {s['read_s']} s, render {s['render_s']} s, "
        f"write {s['write_s']} s) -> {config.output_dir}" + (f"; pushed {s['pushed']}" if "pushed" in s else "")
    )
    return 0 if s["built"] + s["resumed_skipped"] > 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
