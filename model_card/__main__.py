"""Command line of the model card writer.

    python -m model_card --results outputs/eval/results.json --model vlm --model_dir outputs/tiny_vlm \
        --hub_model_id chexanatomy/paligemma2-3b-anatomy-448
    python -m model_card --results outputs/eval/results.json --model unet --model_dir outputs/unet \
        --push_to_hub true --hub_model_id chexanatomy/unet-anatomy

Writes ``README.md`` into the model folder (replacing the card TRL or the Hub mixin wrote there) and copies the
evaluation plots into ``plots/`` beside it. ``--hub_model_id`` is the model's Hub repository (the card's snippets
load it); ``--push_to_hub true`` also uploads the card and its plots there.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from chexanatomy.cli import HubOptions, parse_config, prog_name, run_main  # noqa: E402

from .card import push_card, write_card  # noqa: E402


@dataclass
class CardConfig(HubOptions):
    """Which model's card to render, from which results, and where it goes (publishing: ``HubOptions``)."""

    results: str = field(default="outputs/eval/results.json", metadata={"help": "Results JSON of `python -m eval`."})
    model: str = field(default="vlm", metadata={"help": "The model's id in the results (`models[].id`)."})
    model_dir: str | None = field(default=None, metadata={"help": "The training run's output folder."})
    output: str | None = field(default=None, metadata={"help": "The card's path (default MODEL_DIR/README.md)."})

    def __post_init__(self):
        super().__post_init__()
        if self.model_dir is None and self.output is None:
            raise ValueError("model_dir: pass --model_dir (the card goes to MODEL_DIR/README.md) or --output PATH")


def main(argv: list[str] | None = None) -> int:
    """``python -m model_card`` / ``chexanatomy-card``: 0 when the card was written (and pushed), 2 on bad inputs."""
    return run_main(_main, argv)


def _main(argv: list[str]) -> int:
    config = parse_config(CardConfig, argv, prog_name("model_card"), __doc__)
    try:
        path, card, plots = write_card(
            config.results, config.model, config.model_dir, config.hub_model_id, config.output
        )
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {config.results}: {err}", file=sys.stderr)
        return 2
    plot_files = [path.parent / link for link in plots.values()]
    pushed = push_card(card, config.hub_model_id, plot_files) if config.push_to_hub else []
    results = len(card.data.eval_results or [])
    summary = f"wrote the card of {config.model!r} -> {path} ({results} model-index results, {len(plots)} plots"
    summary += f" in {path.parent / 'plots'})" if plots else ")"
    print(summary + (f"; pushed {len(pushed)} files to {config.hub_model_id}" if pushed else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
