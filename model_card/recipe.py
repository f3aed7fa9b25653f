"""The card's training recipe: ``(setting, value)`` rows read from the run's ``TrainingRecord`` (every stage).

A VLM's rows also read its LoRA adapter config and processor; a U-Net's are its network, resolution and loss.
"""

from __future__ import annotations

from chexanatomy.results import escape
from chexanatomy.training_record import TrainingRecord

from .inputs import ModelFolder

TINY = "none: a tiny PaliGemma-architecture model built from a config, trained from scratch"


def final_loss(metrics: list[dict]) -> float | None:
    """The last logged training ``loss`` (the trainer's closing ``train_loss`` is an average, not used)."""
    losses = [m["loss"] for m in metrics if isinstance(m, dict) and m.get("loss") is not None]
    return losses[-1] if losses else None


def run_length(record: TrainingRecord) -> str:
    """``"2500"`` (optimiser steps) or ``"20.0 epochs"``."""
    return str(record.steps) if record.steps else f"{record.epochs} epochs"


STAGE_KINDS = {"train.vision_pretrain": "vision tower pre-training on every structure's mask"}


def stage_summary(record: TrainingRecord) -> str:
    """One stage as text: its kind (when not plain training), corpus, steps or epochs, batch, input size, lr."""
    length = f"{record.steps} steps" if record.steps else f"{record.epochs} epochs"
    size = f" at {record.image_size} px" if record.image_size else ""
    kind = f"{STAGE_KINDS[record.trainer]}, " if record.trainer in STAGE_KINDS else ""
    fit = record.outcome.get("projector_fit") if isinstance(record.outcome, dict) else None
    refit = f", then the projector re-fitted to it (least squares, R^2 {fit['r2']:.2f})" if fit else ""
    return f"{kind}`{record.corpus_dir}`, {length} of {record.batch_size}{size}, lr {record.learning_rate}{refit}"


def by_stage(record: TrainingRecord, describe) -> str:
    """``describe(stage)`` over the stages, consecutive equal words grouped: ``"a (stages 1-4), then b (stage 6)"``.

    Stages ``describe`` gives None for (another trainer's) are left out (``"none"`` when that is every stage); one word
    for every stage is that word alone.
    """
    runs: list[list] = []  # [words, first stage, last stage], 1-based
    for number, stage in enumerate(record.stages(), start=1):
        words = describe(stage)
        if words is None:
            continue
        if runs and runs[-1][0] == words and runs[-1][2] == number - 1:
            runs[-1][2] = number
        else:
            runs.append([words, number, number])
    if not runs:
        return "none"
    if len({words for words, _, _ in runs}) == 1:
        return runs[0][0]
    return ", then ".join(f"{w} (stage {a})" if a == b else f"{w} (stages {a}-{b})" for w, a, b in runs)


def vision_tower_row(record: TrainingRecord) -> tuple[str, str]:
    """How the vision tower was trained, stage by stage (``"trained (stages 1-4), pre-trained as ... (stage 5), ..."``).

    A single stage, or stages that all did the same, give the plain word (``"frozen"``, ``"trained"``).
    """

    def tower_in(stage: TrainingRecord) -> str:
        if stage.trainer == "train.vision_pretrain":
            words = "pre-trained as a dense predictor of every structure"
            weight = stage.options.get("position_weight") if isinstance(stage.options, dict) else None
            return words + (f" and of each token's own position (weight {weight:g})" if weight else "")
        if "vision tower" in stage.frozen:
            return "frozen"
        anatomy, words = anatomy_options(stage), "trained"
        if anatomy.get("vision_lr_scale", 1) != 1:
            words += f" at {anatomy['vision_lr_scale']:g} x the learning rate"
        if anatomy.get("dense_weight"):
            words += f" with its dense pre-training loss kept on at weight {anatomy['dense_weight']:g}"
        if anatomy.get("position_weight"):
            words += f" and each token taught its own position at weight {anatomy['position_weight']:g}"
        return words

    return ("vision tower", by_stage(record, tower_in))


def language_model_row(record: TrainingRecord, layers: int) -> tuple[str, str]:
    """The language model's depth, stage by stage: ``"4 layers (stages 1-8), then grown from 4 to 8 layers ..."``.

    ``layers`` is the folder's depth now; each ``--grow_text_layers`` stage (train.grow) is counted back from it.
    """
    stages = record.stages()  # the same objects on every call
    grown = [int(anatomy_options(stage).get("grow_text_layers") or 0) for stage in stages]
    words = {}
    for i, (stage, new) in enumerate(zip(stages, grown, strict=True)):
        after = layers - sum(grown[i + 1 :])
        grew = f"grown from {after - new} to {after} layers by gated copies of its layers"
        words[id(stage)] = grew if new else f"{after} layers"

    def depth_in(stage: TrainingRecord) -> str:
        return words[id(stage)]

    return ("language model", by_stage(record, depth_in))


def anatomy_options(stage: TrainingRecord) -> dict:
    """A ``train.sft`` stage's ``AnatomyArguments`` as recorded; empty for other trainers and old records."""
    return stage.options.get("anatomy", {}) if isinstance(stage.options, dict) else {}


def loc_prior_rows(record: TrainingRecord) -> list[tuple[str, str]]:
    """The ``<loc>`` prior of the answer training (train.loc_prior), when any stage used it."""
    parts = []
    for stage in record.stages():
        anatomy = anatomy_options(stage)
        if anatomy.get("loc_init"):
            parts.append("ordered <loc> embeddings at the start")
        if anatomy.get("loc_init") or anatomy.get("untie_output"):
            parts.append("output layer untied from the input embeddings")
        if anatomy.get("loc_sigma"):
            parts.append(f"soft <loc> targets (Gaussian, {anatomy['loc_sigma']:g} bins)")
    return [("<loc> prior", ", ".join(dict.fromkeys(parts)))] if parts else []


def seg_shape_rows(record: TrainingRecord) -> list[tuple[str, str]]:
    """The ``<seg>`` codes' shape loss (train.seg_shape) of the stages that used it; none when no stage did."""
    used = [(i, float(w)) for i, stage in enumerate(record.stages(), 1)
            if (w := anatomy_options(stage).get("seg_shape_weight"))]  # fmt: skip
    if not used:
        return []
    weights = ", ".join(f"weight {w:g} in stage {i}" for i, w in used)
    return [("<seg> shape loss", f"{weights}: Dice + BCE of the map the expected codes draw through the frozen codec "
                                 "decoder, against the target codes' map")]  # fmt: skip


def structure_sampling_row(record: TrainingRecord) -> tuple[str, str]:
    """How each answer stage drew its structures (train.collator ``area_power``), per stage when they differ."""

    def words(stage: TrainingRecord) -> str | None:
        if stage.trainer != "train.sft":
            return None
        power = float(anatomy_options(stage).get("area_power") or 0)
        return f"weighted by area fraction ^ {power:g}" if power else "uniform"

    return ("structure sampling", by_stage(record, words))


def augmentation_row(record: TrainingRecord) -> tuple[str, str]:
    """The answer stages' radiograph augmentation (train.sft ``--augment_*``), per stage when it changed.

    A range a stage did not record (older records) is left out rather than filled in with today's default.
    """

    def words(stage: TrainingRecord) -> str | None:
        if stage.trainer != "train.sft":
            return None
        anatomy = anatomy_options(stage)
        fraction = anatomy.get("augment_fraction")
        if not fraction:
            return "none" if fraction == 0 else None
        parts = [f"{float(fraction) * 100:.0f} % of the answers"]
        if zoom := anatomy.get("augment_zoom"):
            parts.append(f"zoom {zoom[0]:g}-{zoom[1]:g}")
        if anatomy.get("augment_rotation"):
            parts.append(f"rotation +-{anatomy['augment_rotation']:g} degrees")
        if anatomy.get("augment_shift"):
            parts.append(f"shift +-{anatomy['augment_shift']:g} of the side")
        parts += shape_changes(anatomy)
        return " ".join(parts[:1]) + (f" ({', '.join(parts[1:])})" if parts[1:] else "")

    return ("augmentation", by_stage(record, words))


def shape_changes(options: dict) -> list[str]:
    """The vertical stretch and smooth deformation a stage's options name (``--augment_aspect/--augment_deform``)."""
    parts = []
    aspect = options.get("augment_aspect")
    if aspect and tuple(aspect) != (1, 1):
        parts.append(f"vertical stretch {aspect[0]:g}-{aspect[1]:g}")
    if options.get("augment_deform"):
        parts.append(f"smooth deformation +-{options['augment_deform']:g} of the side")
    return parts


def unet_augmentation_row(record: TrainingRecord) -> tuple[str, str]:
    """The U-Net stages' augmentation, the stretch and deformation they asked for named.

    train.unet always uses the radiograph augmentation (train.augment's default geometry and style); stages whose
    record predates ``--augment_aspect`` are left out.
    """

    def words(stage: TrainingRecord) -> str | None:
        options = stage.options if isinstance(stage.options, dict) else {}
        if stage.trainer != "train.unet" or "augment_aspect" not in options:
            return None
        changes = shape_changes(options)
        return "radiograph augmentation" + (f" with {', '.join(changes)}" if changes else "")

    return ("augmentation", by_stage(record, words))


def stage_rows(record: TrainingRecord) -> list[tuple[str, str]]:
    """The ``training stages`` row of a model trained in several runs; none for one run."""
    stages = record.stages()
    if len(stages) < 2:
        return []
    return [("training stages", "; ".join(f"{i}: {stage_summary(s)}" for i, s in enumerate(stages, 1)))]


def schedule_rows(record: TrainingRecord) -> list[tuple[str, str]]:
    """Optimiser and length rows (the last stage's, when there were several)."""
    last = " (last stage)" if len(record.stages()) > 1 else ""
    return [
        ("optimiser", f"{record.optimiser}, lr {record.learning_rate}, {record.schedule} decay"),
        (f"steps{last}", run_length(record)),
    ]


def weights_rows(record: TrainingRecord | None, adapter: dict | None, first_start: str | None) -> list:
    """What the VLM's run trained: LoRA (from the adapter config, else the record) or which weights."""
    if adapter is not None or (record is not None and record.lora):
        lora, adapter = (record.lora if record is not None else None) or {}, adapter or {}
        targets = adapter.get("target_modules")
        targets = ", ".join(sorted(targets)) if isinstance(targets, list) else targets
        r, alpha = adapter.get("r", lora.get("r")), adapter.get("lora_alpha", lora.get("alpha"))
        dropout = adapter.get("lora_dropout", lora.get("dropout"))
        rows = [("weights trained", f"LoRA r={r}, alpha={alpha}, dropout {dropout}")]
        return rows + ([("LoRA targets", f"`{targets}`")] if targets else [])
    if record is None:
        return []
    return [("weights trained", "all" if first_start == "tiny" or not record.frozen else "all language-model weights")]


def vlm_recipe(folder: ModelFolder) -> list[tuple[str, str]]:
    """``(setting, value)`` rows of a VLM's training recipe, from the training record and the adapter config."""
    record, stages = folder.training, folder.stages()
    start = stages[0].start if stages else None
    start = start or (folder.adapter or {}).get("base_model_name_or_path")
    rows = [("base model", TINY if start == "tiny" else f"`{start}`")] if start else []
    rows += weights_rows(record, folder.adapter, start)
    if record is not None:
        rows += [
            vision_tower_row(record),
            *([language_model_row(record, folder.text_layers)] if folder.text_layers else []),
            *loc_prior_rows(record),
            *seg_shape_rows(record),
            ("training corpus", f"`{record.corpus_dir}`"),
            ("structures per answer", str(record.structures_per_answer)),
            structure_sampling_row(record),
            augmentation_row(record),
            *stage_rows(record),
            *schedule_rows(record),
            ("batch", f"{record.batch_size} per device"
             + (f" x {record.gradient_accumulation} accumulation" if record.gradient_accumulation != 1 else "")),
            ("precision", record.precision),
        ]  # fmt: skip
    if folder.image_size:
        rows.append(("resolution", f"{folder.image_size} x {folder.image_size} px"))
    return rows


def unet_recipe(folder: ModelFolder) -> list[tuple[str, str]]:
    """``(setting, value)`` rows of the U-Net's training recipe, from its training record."""
    record = folder.training
    if record is None:
        return []
    return [
        ("network", f"U-Net (segmentation-models-pytorch), encoder `{record.encoder}`, no pretrained weights"),
        ("training corpus", f"`{record.corpus_dir}`"),
        ("resolution", f"{record.image_size} x {record.image_size} px"),
        ("loss", "Dice + binary cross-entropy, one sigmoid channel per structure"),
        *([row] if (row := unet_augmentation_row(record))[1] != "none" else []),
        *stage_rows(record),
        *schedule_rows(record),
        ("batch", str(record.batch_size)),
    ]


def recipe_rows(kind: str, folder: ModelFolder) -> list[tuple[str, str]]:
    """The training recipe as ``(setting, value)`` rows, with the final loss; empty without a training record."""
    rows = unet_recipe(folder) if kind == "unet" else vlm_recipe(folder) if folder.training or folder.adapter else []
    loss = final_loss(folder.metrics)
    if loss is not None:
        rows.append(("final training loss", f"{loss:.4g}"))
    return [(key, escape(value)) for key, value in rows]
