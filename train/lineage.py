"""Training lineage: a model trained in several runs keeps the configuration of every run.

Both ``train.sft`` and ``train.unet`` write ``training_config.json`` next to the weights. A run that starts from
a folder one of them saved nests that folder's configuration under ``initialised_from`` (recursively), so
the model card can list every stage's corpus, steps and learning rate (``model_card.card.training_stages``).
"""

from __future__ import annotations

import json
from pathlib import Path


def previous_training(model_dir: str | None) -> dict | None:
    """The training configuration of a local model folder a run continues from, its own lineage included.

    Returns ``{"path": model_dir, **training_config}``; ``None`` for ``None``, Hub ids, ``tiny`` and folders
    without a ``training_config.json``.
    """
    if not model_dir:
        return None
    path = Path(model_dir) / "training_config.json"
    if not path.is_file():
        return None
    return {"path": str(model_dir), **json.loads(path.read_text())}
