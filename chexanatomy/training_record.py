"""What a training run did, in one shape for every trainer: ``training_config.json`` beside the weights.

``train.sft``, ``train.unet`` and ``train.codec`` each write one ``TrainingRecord`` (``sft_record``,
``unet_record``, ``codec_record`` turn their options into it) and the model card reads it back
(``read_training_record``); nobody else picks a run's options apart by key name.

A model trained in several runs keeps every run: a run that starts from a local folder holding a record nests that
record under ``initialised_from`` (with the folder as ``path``), recursively, so ``stages()`` lists them first
first. Units: ``learning_rate`` is the peak rate; ``batch_size`` is per device per optimiser step (before
gradient accumulation); ``image_size`` is the input side in pixels.

Older folders wrote the trainers' raw options instead (SFT: ``{"anatomy": ..., "sft": ...}``; U-Net and codec:
their flat option dictionaries); ``TrainingRecord.from_dict`` reads those shapes too.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .locate import hub_id

FILE_NAME = "training_config.json"
TRAINERS = ("train.vision_pretrain", "train.sft", "train.unet", "train.codec")


@dataclass
class TrainingRecord:
    """One training run (one stage of a model), as written to ``training_config.json``.

    Attributes:
        trainer: the module that trained: ``train.vision_pretrain`` (a VLM's tower, before ``train.sft``),
            ``train.sft``, ``train.unet`` or ``train.codec``.
        corpus_dir: the corpus as given on the command line (a folder, or a Hub dataset id).
        corpus_hub_id: the Hub dataset id when the corpus was read from the Hub, else None (a local folder).
        corpus_source: how the corpus was built (``build_config.json``'s ``source``: ``embedded``, ...), if known.
        start: what the weights started from: a Hub id or folder, ``"tiny"`` (a small model built from a config,
            randomly initialised) or None (random initialisation).
        learning_rate: the peak learning rate.
        batch_size: examples per device per optimiser step.
        steps: a fixed number of optimiser steps, or None when the run was given in ``epochs``.
        epochs: passes over the training split (used when ``steps`` is None).
        gradient_accumulation: micro-batches per optimiser step.
        optimiser: the optimiser's name (``adamw_torch``, ``AdamW``).
        schedule: the learning-rate decay (``linear``, ``cosine``).
        precision: ``bf16``, ``fp16`` or ``fp32``.
        image_size: the input side in pixels, when the trainer sets it (the VLM's is in its processor).
        encoder: the U-Net's encoder (segmentation-models-pytorch name).
        lora: ``{"r", "alpha", "dropout"}`` of a LoRA run, else None (the weights themselves were trained).
        frozen: the parts of the network left untrained (``["vision tower"]``).
        structures_per_answer: structures packed into one training answer (VLM).
        outcome: what the run reported beyond its options: ``steps_done``, ``head_remapped``, ``masks_in_bank``.
        options: every option of the run verbatim, to reproduce it (not read by the card).
        initialised_from: the record of the local model this run started from, if it had one.
        path: for a nested record, the folder the later run started from.
    """

    trainer: str
    corpus_dir: str
    learning_rate: float
    batch_size: int
    corpus_hub_id: str | None = None
    corpus_source: str | None = None
    start: str | None = None
    steps: int | None = None
    epochs: float | None = None
    gradient_accumulation: int = 1
    optimiser: str = "AdamW"
    schedule: str = "cosine"
    precision: str = "fp32"
    image_size: int | None = None
    encoder: str | None = None
    lora: dict | None = None
    frozen: list[str] = field(default_factory=list)
    structures_per_answer: int | None = None
    outcome: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    initialised_from: TrainingRecord | None = None
    path: str | None = None

    def __post_init__(self):
        if self.trainer not in TRAINERS:
            raise ValueError(f"trainer must be one of {TRAINERS}, got {self.trainer!r}")

    def stages(self) -> list[TrainingRecord]:
        """Every run of the model, the first first, this one last."""
        earlier = self.initialised_from.stages() if self.initialised_from is not None else []
        return [*earlier, self]

    def from_scratch(self) -> bool:
        """Whether the first stage started from random initialisation (None or ``tiny``)."""
        return self.stages()[0].start in (None, "tiny")

    def to_dict(self) -> dict:
        """The JSON-ready dictionary (``initialised_from`` nested)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainingRecord:
        """The record of a ``training_config.json`` dictionary, in this shape or one the trainers wrote before.

        Raises:
            ValueError: when ``data`` is no training record of any shape.
        """
        data = dict(data)
        if "trainer" not in data:
            return _from_old_shape(data)
        known = {f.name for f in fields(cls)}
        if unknown := sorted(set(data) - known):
            raise ValueError(f"unknown training record fields {unknown}")
        previous = data.pop("initialised_from", None)
        return cls(**data, initialised_from=cls.from_dict(previous) if previous else None)

    def save(self, folder: Path | str) -> Path:
        """Write ``training_config.json`` into ``folder``; returns its path."""
        path = Path(folder) / FILE_NAME
        path.write_text(json.dumps(self.to_dict(), indent=2, default=str) + "\n", encoding="utf-8")
        return path


def read_training_record(folder: Path | str | None) -> TrainingRecord | None:
    """The record in a local model folder, with ``path`` set to the folder; None without one (or a Hub id)."""
    if not folder:
        return None
    path = Path(folder) / FILE_NAME
    if not path.is_file():
        return None
    record = TrainingRecord.from_dict(json.loads(path.read_text(encoding="utf-8")))
    record.path = str(folder)
    return record


def corpus_facts(corpus_dir: str) -> dict:
    """``corpus_hub_id`` and ``corpus_source`` of a corpus at training time (a local folder's ``build_config.json``)."""
    local = Path(corpus_dir)
    if local.is_dir():
        build = local / "build_config.json"
        source = json.loads(build.read_text(encoding="utf-8")).get("source") if build.is_file() else None
        return {"corpus_hub_id": None, "corpus_source": source}
    return {"corpus_hub_id": hub_id(corpus_dir), "corpus_source": None}


def sft_record(anatomy: dict, sft: dict, previous: TrainingRecord | None = None, facts: dict | None = None):
    """The record of a ``train.sft`` run from its ``AnatomyArguments`` and ``SFTConfig`` as dictionaries.

    ``facts`` are ``corpus_facts`` (default: the corpus as it is now).
    """
    steps = sft.get("max_steps")
    precision = "bf16" if sft.get("bf16") else "fp16" if sft.get("fp16") else "fp32"
    lora = {"r": anatomy.get("lora_r"), "alpha": anatomy.get("lora_alpha"), "dropout": anatomy.get("lora_dropout")}
    return TrainingRecord(
        trainer="train.sft", corpus_dir=anatomy["corpus_dir"], start=anatomy.get("model_name_or_path"),
        learning_rate=sft.get("learning_rate"), batch_size=sft.get("per_device_train_batch_size"),
        steps=steps if steps and steps > 0 else None, epochs=sft.get("num_train_epochs"),
        gradient_accumulation=sft.get("gradient_accumulation_steps", 1), optimiser=sft.get("optim"),
        schedule=sft.get("lr_scheduler_type"), precision=precision,
        lora=lora if anatomy.get("lora") else None, frozen=[] if anatomy.get("train_vision") else ["vision tower"],
        structures_per_answer=anatomy.get("structures_per_sample"),
        options={"anatomy": anatomy, "sft": sft}, initialised_from=previous,
        **(facts if facts is not None else corpus_facts(anatomy["corpus_dir"])),
    )  # fmt: skip


def unet_record(options: dict, previous: TrainingRecord | None = None, facts: dict | None = None, **outcome):
    """The record of a ``train.unet`` run from its ``UNetTrainConfig`` as a dictionary (``outcome``: head_remapped)."""
    return TrainingRecord(
        trainer="train.unet", corpus_dir=options["corpus_dir"], start=options.get("init_from"),
        learning_rate=options["learning_rate"], batch_size=options["batch_size"],
        steps=options.get("max_steps") or None, epochs=options.get("epochs"), optimiser="AdamW", schedule="cosine",
        precision="bf16" if options.get("bf16") else "fp32", image_size=options.get("size"),
        encoder=options.get("encoder"), outcome={k: v for k, v in outcome.items() if v is not None},
        options=options, initialised_from=previous,
        **(facts if facts is not None else corpus_facts(options["corpus_dir"])),
    )  # fmt: skip


def vision_pretrain_record(options: dict, previous: TrainingRecord | None = None, facts: dict | None = None,
                           **outcome):  # fmt: skip
    """The record of a ``train.vision_pretrain`` run from its ``VisionPretrainConfig``.

    ``outcome``: ``steps_done`` and, after ``--init_from``, ``projector_fit``. The language model is not trained
    (left at its random initialisation, or as the ``init_from`` folder had it): the record says so in ``frozen``.
    ``steps`` are the steps run (a ``--max_minutes`` run may stop before ``max_steps``). ``previous``: the
    ``init_from`` folder's record.
    """
    return TrainingRecord(
        trainer="train.vision_pretrain", corpus_dir=options["corpus_dir"], start=options.get("init_from") or "tiny",
        learning_rate=options["learning_rate"], batch_size=options["batch_size"],
        steps=outcome.get("steps_done") or options["max_steps"], optimiser="AdamW", schedule="cosine",
        image_size=options["image_size"], frozen=["language model"],
        outcome=outcome, options=options, initialised_from=previous,
        **(facts if facts is not None else corpus_facts(options["corpus_dir"])),
    )  # fmt: skip


def codec_record(options: dict, facts: dict | None = None, **outcome):
    """The record of a ``train.codec`` run from its ``CodecTrainConfig`` as a dictionary (``outcome``: steps_done)."""
    return TrainingRecord(
        trainer="train.codec", corpus_dir=options["corpus_dir"], start=options.get("init_from"),
        learning_rate=options["learning_rate"], batch_size=options["batch_size"], steps=options["steps"],
        optimiser="AdamW", schedule="cosine", image_size=64, outcome=outcome, options=options,
        **(facts if facts is not None else corpus_facts(options["corpus_dir"])),
    )  # fmt: skip


_OLD_FACTS = {"corpus_hub_id": None, "corpus_source": None}


def _from_old_shape(data: dict) -> TrainingRecord:
    """A record from the raw options older trainers wrote (see the module docstring)."""
    path = data.pop("path", None)
    previous = data.pop("initialised_from", None)
    previous = TrainingRecord.from_dict(previous) if previous else None
    corpus = (data.get("anatomy") or data).get("corpus_dir") or ""
    facts = {**_OLD_FACTS, "corpus_hub_id": hub_id(corpus)}  # as the card judged it from the name alone
    if "anatomy" in data or "sft" in data:
        record = sft_record(data.get("anatomy", {}), data.get("sft", {}), previous, facts)
    elif "encoder" in data:
        head = data.pop("head_remapped", None)
        record = unet_record(data, previous, facts, head_remapped=head)
    elif "steps_done" in data or "restart_after" in data:
        outcome = {k: data.pop(k) for k in ("steps_done", "masks_in_bank", "note") if k in data}
        record = codec_record(data, facts, **outcome)
    else:
        raise ValueError(f"not a training record: keys {sorted(data)[:6]}")
    record.path = path
    return record
