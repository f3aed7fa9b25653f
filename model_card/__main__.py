"""Command line of the model card writer.

    python -m model_card --results outputs/eval/results.json --model vlm --model_dir outputs/tiny_vlm \
        --repo_id chexanatomy/paligemma2-3b-anatomy-448
    python -m model_card --results outputs/eval/results.json --model unet --model_dir outputs/unet --push \
        --repo_id chexanatomy/unet-anatomy

Writes ``README.md`` into the model folder (replacing the card TRL or the Hub mixin wrote there) and copies the
evaluation plots into ``plots/`` beside it; ``--push`` uploads both to ``--repo_id``.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from chexanatomy.cli import parse_config  # noqa: E402

from .card import push_card, write_card  # noqa: E402


@dataclass
class CardConfig:
    """Which model's card to render, from which results, and where it goes."""

    results: str = field(default="outputs/eval/results.json", metadata={"help": "Results JSON of `python -m eval`."})
    model: str = field(default="vlm", metadata={"help": "The model's id in the results (`models[].id`)."})
    model_dir: str | None = field(default=None, metadata={"help": "The training run's output folder."})
    repo_id: str | None = field(default=None, metadata={"help": "Hub repository of the model (snippets, --push)."})
    output: str | None = field(default=None, metadata={"help": "The card's path (default MODEL_DIR/README.md)."})
    push: bool = field(default=False, metadata={"help": "Upload the card and its plots to --repo_id."})

    def __post_init__(self):
        if self.model_dir is None and self.output is None:
            raise ValueError("model_dir: pass --model_dir (the card goes to MODEL_DIR/README.md) or --output PATH")
        if self.push and not self.repo_id:
            raise ValueError("repo_id: --push needs --repo_id (the Hub repository of the model)")


def main(argv: list[str] | None = None) -> int:
    """Returns 0 when the card was written (and pushed), 2 when the inputs are wrong."""
    config = parse_config(CardConfig, list(sys.argv[1:] if argv is None else argv))
    try:
        path, card, plots = write_card(config.results, config.model, config.model_dir, config.repo_id, config.output)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {config.results}: {err}", file=sys.stderr)
        return 2
    pushed = push_card(card, config.repo_id, [path.parent / link for link in plots.values()]) if config.push else []
    results = len(card.data.eval_results or [])
    summary = f"wrote the card of {config.model!r} -> {path} ({results} model-index results, {len(plots)} plots"
    summary += f" in {path.parent / 'plots'})" if plots else ")"
    print(summary + (f"; pushed {len(pushed)} files to {config.repo_id}" if pushed else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
