"""What a card is made of: the evaluation results of one model, and the folder the training run wrote.

* the results JSON of ``python -m eval`` (``chexanatomy.results``): ``select_model`` picks one model's entry and
  its evaluations;
* the model folder that ``python -m train.sft`` or ``python -m train.unet`` wrote: ``adapter_config.json`` (a
  LoRA adapter), ``training_config.json`` (a ``TrainingRecord``), ``training_metrics.json`` and
  ``processor_config.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from chexanatomy.training_record import TrainingRecord, read_training_record

KINDS = ("vlm", "unet")


@dataclass
class ModelFolder:
    """What the card reads from a trained model folder; every part is optional (a card renders without one).

    Attributes:
        path: the folder, or ``None`` when no folder was given.
        adapter: ``adapter_config.json`` (present: the folder is a PEFT LoRA adapter).
        training: ``training_config.json``: the run's ``TrainingRecord`` (earlier runs under ``initialised_from``).
        metrics: ``training_metrics.json``: the trainer's log history, a list of dicts with ``loss``/``step``.
        image_size: the processor's input side in px (``processor_config.json``), VLM only.
        text_layers: the language model's decoder layers (``config.json``), VLM only.
    """

    path: Path | None = None
    adapter: dict | None = None
    training: TrainingRecord | None = None
    metrics: list[dict] = field(default_factory=list)
    image_size: int | None = None
    text_layers: int | None = None

    def stages(self) -> list[TrainingRecord]:
        """The training runs, first first; empty without a training record."""
        return self.training.stages() if self.training is not None else []


def _read_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def read_model_folder(model_dir: Path | str | None) -> ModelFolder:
    """Read the files the card uses from ``model_dir`` (``None``: an empty ``ModelFolder``).

    Raises:
        FileNotFoundError: when ``model_dir`` is given but is not a folder.
    """
    if model_dir is None:
        return ModelFolder()
    path = Path(model_dir)
    if not path.is_dir():
        raise FileNotFoundError(f"model folder {path} does not exist: pass the --output_dir of the training run")
    metrics = _read_json(path / "training_metrics.json") or []
    if isinstance(metrics, dict):  # a Trainer state rather than its bare log history
        metrics = metrics.get("log_history", [])
    processor = _read_json(path / "processor_config.json") or {}
    size = processor.get("image_processor", processor).get("size", {})
    text_config = (_read_json(path / "config.json") or {}).get("text_config") or {}
    return ModelFolder(
        path=path,
        adapter=_read_json(path / "adapter_config.json"),
        training=read_training_record(path),
        metrics=metrics,
        image_size=size.get("height") if isinstance(size, dict) else None,
        text_layers=text_config.get("num_hidden_layers"),
    )


def select_model(results: dict, model_id: str) -> tuple[dict, list[dict]]:
    """The ``models`` entry of ``model_id`` and its evaluations, in file order.

    Raises:
        ValueError: naming the models the results hold, when ``model_id`` is not one of them or has no
            evaluation, or when its ``kind`` is not one of ``KINDS``.
    """
    models = {m["id"]: m for m in results.get("models", [])}
    if model_id not in models:
        raise ValueError(
            f"the results have no model {model_id!r}; models in them: {sorted(models)} (pass one of those as --model)"
        )
    model = models[model_id]
    if model.get("kind") not in KINDS:
        raise ValueError(f"model {model_id!r} has kind {model.get('kind')!r}; cards are rendered for kinds {KINDS}")
    evaluations = [e for e in results.get("evaluations", []) if e.get("model") == model_id]
    if not evaluations:
        raise ValueError(f"the results have no evaluation of model {model_id!r}: re-run `python -m eval` with it")
    return model, evaluations


def trained_on_embedded_ct(evaluations: list[dict], folder: ModelFolder) -> bool:
    """Whether the training corpus is the embedded-CT demonstration corpus (one CT's deformations).

    Read from the training record (the corpus's ``build_config.json`` at training time, else now when the corpus
    folder is still here), else from the names of the synthetic datasets evaluated.
    """
    record = folder.training
    source = record.corpus_source if record is not None else None
    if source is None and record is not None and Path(record.corpus_dir).is_dir():
        source = (_read_json(Path(record.corpus_dir) / "build_config.json") or {}).get("source")
    if source is not None:
        return source == "embedded"
    names = [e["dataset"].get("name", "").lower() for e in evaluations if e["dataset"].get("synthetic")]
    return any("embedded" in name for name in names)
