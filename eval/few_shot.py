"""Few-shot adaptation: k examples of a never-trained localisation task, from the anatomy model vs its base.

Fine-tune on k examples, from the anatomy model and from its base, and compare Dice on the test split (the
paper's third claim).

    python -m eval --vlm bundled-vlm --studies few_shot --few_shot_k 1 2 4 8 16

The new task is a composite the anatomy training never asked for: the *cardiomediastinal silhouette*, the union of
the heart, great vessels, trachea and oesophagus masks of each corpus row (what a radiologist outlines as the
mediastinal contour). Targets are encoded with the model's own mask codec, so only the language model has to
learn the task. "Base" is the anatomy model's starting point: a fresh random initialisation of the same
architecture for a model trained from scratch (the bundled tiny model), or the LoRA base model without the
anatomy adapter for a PaliGemma adapter. Both starts get the same k examples, steps, learning rate and seed.

Both answer through the token contract (``chexanatomy.answer_contract``: generation constrained to four ordered
``<loc>`` tokens, sixteen ``<seg>`` codes and the name), so the base answers in the right format from its first
step: the study compares what the two starts know about the image, not whether 16 examples can teach a random
model the answer format (without the contract the random base scored 0.000 at every k for that reason alone).

Training here is a short ``SFTTrainer`` run with the anatomy trainer's own pieces from the core
(``chexanatomy.finetune``: the processor-``suffix`` batch, the answer-only loss), for a task outside the vocabulary.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from chexanatomy.finetune import answer_only_trainer_class, prepare_sft_config, suffix_batch
from chexanatomy.inference import VLMSegmenter
from chexanatomy.masks import dice

TASK_NAME = "cardiomediastinal silhouette"
TASK_MEMBERS = ("heart", "aorta", "pulmonary_artery", "superior_vena_cava", "trachea", "esophagus")
DEFAULT_K = (1, 2, 4, 8, 16)


@dataclass
class FewShotConfig:
    """Settings shared by every run of the study."""

    ks: tuple[int, ...] = DEFAULT_K
    steps: int = 40
    learning_rate: float = 5e-4
    batch_size: int = 8
    seed: int = 0
    views: tuple[str, ...] = ("PA", "AP")


def task_mask(row: dict) -> np.ndarray | None:
    """The task's mask bool [H, W] for a corpus row: union of the members present; None when none is."""
    masks = [np.asarray(s["mask"], dtype=bool) for s in row["structures"] if s["name"] in TASK_MEMBERS]
    return np.logical_or.reduce(masks) if masks else None


def task_examples(rows, segmenter: VLMSegmenter, views: tuple[str, ...]) -> list[dict]:
    """``{"image", "mask", "target"}`` for each usable row of the given views (target: the codec's answer)."""
    examples = []
    for row in rows:
        mask = task_mask(row) if row.get("view", "PA") in views else None
        if mask is None or not mask.any():
            continue
        target = segmenter.tokenizer.encode(mask[None], [TASK_NAME])[0]
        examples.append({"image": row["image"].convert("RGB"), "mask": mask, "target": target})
    return examples


def task_batch(processor, examples: list[dict]):
    """The training batch of ``segment {TASK_NAME}`` prompts answered by the examples' targets (``suffix_batch``)."""
    prompts = [f"segment {TASK_NAME}"] * len(examples)
    return suffix_batch(processor, prompts, [e["image"] for e in examples], [e["target"] for e in examples])


def fine_tune(model, processor, examples: list[dict], config: FewShotConfig) -> None:
    """``config.steps`` SFT steps on the examples (repeated as needed), all trainable weights, in place."""
    import datasets
    from trl import SFTConfig

    train = datasets.Dataset.from_list([{"index": i} for i in range(len(examples))])
    with tempfile.TemporaryDirectory() as tmp:
        sft = SFTConfig(
            output_dir=tmp,
            max_steps=config.steps,
            per_device_train_batch_size=min(config.batch_size, len(examples)),
            learning_rate=config.learning_rate,
            lr_scheduler_type="constant",
            save_strategy="no",
            logging_strategy="no",
            report_to="none",
            seed=config.seed,
            bf16=False,
            disable_tqdm=True,
        )
        trainer = answer_only_trainer_class()(
            model=model,
            args=prepare_sft_config(sft),
            train_dataset=train,
            processing_class=processor,
            data_collator=lambda rows: task_batch(processor, [examples[r["index"]] for r in rows]),
        )
        trainer.train()
    model.eval()


def task_dice(segmenter: VLMSegmenter, examples: list[dict]) -> tuple[float, float]:
    """(mean Dice, invalid rate) of greedy ``segment <task>`` answers on the examples."""
    scores, invalid = [], 0
    for e in examples:
        answer = segmenter.generate_answers(e["image"], [f"segment {TASK_NAME}"])[0]
        objects = segmenter.tokenizer.decode(answer, e["mask"].shape)
        ok = bool(objects) and objects[0].valid
        invalid += not ok
        scores.append(dice(objects[0].mask, e["mask"]) if ok else 0.0)
    return float(np.mean(scores)), invalid / max(len(examples), 1)


def fresh_copy(segmenter: VLMSegmenter, start: str):
    """A trainable copy of the model to start from: "anatomy" (as trained) or "base" (see module docstring)."""
    import copy

    model = segmenter.model
    if start == "anatomy":
        return copy.deepcopy(model).train()
    if hasattr(model, "get_base_model"):  # a PEFT adapter: the base without it, with a fresh adapter
        from peft import get_peft_model

        base = copy.deepcopy(model.get_base_model())
        return get_peft_model(base, model.peft_config["default"]).train()
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(0)
    return AutoModelForImageTextToText.from_config(model.config).train()


def few_shot_study(segmenter: VLMSegmenter, train_rows, test_rows, config: FewShotConfig | None = None) -> dict:
    """Dice vs k for both starts: ``{"task", "members", "rows": [{"start", "k", "dice", "invalid_rate"}], ...}``.

    Raises:
        ValueError: when the corpus has fewer task examples than the largest k.
    """
    config = config or FewShotConfig()
    train, test = task_examples(train_rows, segmenter, config.views), task_examples(test_rows, segmenter, config.views)
    if len(train) < max(config.ks) or not test:
        raise ValueError(
            f"{len(train)} training and {len(test)} test examples of the task; k up to {max(config.ks)} needs more"
        )
    rows = []
    for start in ("anatomy", "base"):
        rows.append({"start": start, "k": 0, **_scores(segmenter, fresh_copy(segmenter, start), test)})
        for k in config.ks:
            model = fresh_copy(segmenter, start)
            fine_tune(model, segmenter.processor, train[:k], config)
            rows.append({"start": start, "k": k, **_scores(segmenter, model, test)})
            print(f"few-shot {start:8s} k={k:3d}: Dice {rows[-1]['dice']:.3f}")
    return {
        "task": TASK_NAME,
        "members": list(TASK_MEMBERS),
        "test_images": len(test),
        "steps": config.steps,
        "learning_rate": config.learning_rate,
        "rows": rows,
    }


def _scores(segmenter: VLMSegmenter, model, test: list[dict]) -> dict:
    probe = VLMSegmenter(model.eval(), segmenter.processor, segmenter.tokenizer, segmenter.structures,
                         loc_decoding=segmenter.loc_decoding, seg_decoding=segmenter.seg_decoding)
    value, invalid = task_dice(probe, test)
    return {"dice": value, "invalid_rate": invalid}


def plot_few_shot(study: dict, path: Path) -> Path:
    """Dice vs k (log2 axis) for each start, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for start in ("anatomy", "base"):
        points = sorted((r["k"], r["dice"]) for r in study["rows"] if r["start"] == start and r["k"] > 0)
        ax.plot([k for k, _ in points], [d for _, d in points], marker="o", label=f"from {start}")
    ax.set_xscale("log", base=2)
    ax.set(xlabel="k training examples", ylabel="test Dice", title=f"few-shot: {study['task']}", ylim=(0, 1))
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def few_shot_table(study: dict) -> str:
    """Markdown: one row per k, Dice from the anatomy model and from the base."""
    by = {(r["start"], r["k"]): r["dice"] for r in study["rows"]}
    ks = sorted({r["k"] for r in study["rows"]})
    lines = ["| k | from anatomy model | from base |", "| ---: | ---: | ---: |"]
    lines += [
        f"| {k} | {by.get(('anatomy', k), float('nan')):.3f} | {by.get(('base', k), float('nan')):.3f} |" for k in ks
    ]
    return "\n".join(lines)


__all__ = ["FewShotConfig", "few_shot_study", "few_shot_table", "plot_few_shot", "task_mask"]
