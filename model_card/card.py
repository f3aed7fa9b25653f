"""The model card: rendered with ``huggingface_hub.ModelCard.from_template`` from evaluation results and a model folder.

    python -m model_card --results outputs/eval/results.json --model vlm --model_dir outputs/tiny_vlm

Nothing in a card is written by hand. The metadata (license, base model, library, pipeline tag and the
``model-index`` of evaluation results) and the body's tables come from two places:

* the results JSON of ``python -m eval`` (``schema_version`` 1): ``models``, ``evaluations`` (one per model and
  dataset, with a ``summary`` and ``per_structure`` metrics), and the optional ``studies`` and ``plots``;
* the model folder that ``python -m train.sft`` or ``python -m train.unet`` wrote: ``adapter_config.json`` (a
  LoRA adapter), ``training_config.json``, ``training_metrics.json`` and ``processor_config.json``.

Units: Dice, IoU and box IoU in [0, 1]; HD95 in pixels of the original image (``hd95_px``) or mm (``hd95_mm``);
invalid rates are fractions in [0, 1], shown as percentages. Imports nothing of ours but the core package.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from chexanatomy import CITATION
from chexanatomy.anatomy import STRUCTURES
from chexanatomy.locate import hub_id

TEMPLATE = Path(__file__).parent / "templates" / "model_card.md"
SCHEMA_VERSION = 1
KINDS = ("vlm", "unet")
TAGS = ["chexanatomy", "chest-x-ray", "anatomy", "segmentation", "paligemma", "drr", "medical-imaging"]
TASK_TYPE = "image-segmentation"
# (key in summary["macro"], model-index metric type, metric name): the macro means the model-index carries.
INDEX_METRICS = (
    ("dice", "dice", "macro Dice"),
    ("iou", "iou", "macro IoU"),
    ("hd95_px", "hd95", "macro HD95 (px)"),
    ("invalid_rate", "invalid_rate", "invalid-answer rate"),
)
LOWEST_SHOWN = 5
# Unions of many thin pieces that 16 mask codes cannot draw (docs/codec.md); the vocabulary marks them.
MULTIPART = tuple(name for name, s in STRUCTURES.items() if s.multipart)
@dataclass
class ModelFolder:
    """What the card reads from a trained model folder; every part is optional (a card renders without one).

    Attributes:
        path: the folder, or ``None`` when no folder was given.
        adapter: ``adapter_config.json`` (present: the folder is a PEFT LoRA adapter).
        training: ``training_config.json``: ``{"anatomy": ..., "sft": ...}`` for the VLM, flat for the U-Net.
        metrics: ``training_metrics.json``: the trainer's log history, a list of dicts with ``loss``/``step``.
        image_size: the processor's input side in px (``processor_config.json``), VLM only.
    """

    path: Path | None = None
    adapter: dict | None = None
    training: dict = field(default_factory=dict)
    metrics: list[dict] = field(default_factory=list)
    image_size: int | None = None


def _read_json(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


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
    return ModelFolder(
        path=path,
        adapter=_read_json(path / "adapter_config.json"),
        training=_read_json(path / "training_config.json") or {},
        metrics=metrics,
        image_size=size.get("height") if isinstance(size, dict) else None,
    )


def load_results(path: Path | str) -> dict:
    """The results JSON written by ``python -m eval``.

    Raises:
        FileNotFoundError: when the file does not exist.
        ValueError: when its ``schema_version`` is not the one this card renders.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"results file {path} does not exist: run `python -m eval` first")
    results = json.loads(path.read_text())
    if results.get("schema_version") != SCHEMA_VERSION:
        version = results.get("schema_version")
        raise ValueError(f"{path}: schema_version {version!r}, this card renders schema_version {SCHEMA_VERSION}")
    return results


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


# --------------------------------------------------------------------------------------------------
# Metadata
# --------------------------------------------------------------------------------------------------


def variant(kind: str, folder: ModelFolder) -> str:
    """``"adapter"`` (a LoRA adapter folder), ``"full"`` (a whole VLM) or ``"unet"``."""
    if kind == "unet":
        return "unet"
    return "adapter" if folder.adapter is not None else "full"


def first_model_name(folder: ModelFolder) -> str | None:
    """``model_name_or_path`` of the first training stage (a continued run's own start is a local folder)."""
    stages = training_stages(folder.training) or [{}]
    return stages[0].get("anatomy", {}).get("model_name_or_path")


def base_model(kind: str, folder: ModelFolder) -> str | None:
    """The Hub model this one was fine-tuned from, followed through every training stage.

    ``None`` for the U-Net, for models trained from scratch (``tiny``) and for a local folder (no Hub link).
    """
    if kind == "unet":
        return None
    name = (folder.adapter or {}).get("base_model_name_or_path") or first_model_name(folder)
    return name if name and hub_id(name) else None


def from_scratch(kind: str, folder: ModelFolder) -> bool:
    """Whether the weights were trained from random initialisation: the U-Net, and the ``tiny`` VLM (any stage)."""
    return kind == "unet" or first_model_name(folder) == "tiny"


def license_of(kind: str, folder: ModelFolder) -> str | None:
    """The terms the weights fall under.

    Ours (``apache-2.0``) when trained from scratch, else the base model's (``gemma`` for PaliGemma and
    PaliGemma 2); ``None`` when the base model is unknown (the user states it).
    """
    if from_scratch(kind, folder):
        return "apache-2.0"
    base = base_model(kind, folder)
    return "gemma" if base and "gemma" in base.lower() else None


def model_name_of(model_id: str, model_dir: Path | str | None, repo_id: str | None) -> str:
    """The name the ``model-index`` and the title use: the repo's name, else the folder's, else the results id."""
    if repo_id:
        return repo_id.split("/")[-1]
    return Path(model_dir).name if model_dir is not None else model_id


def training_datasets(evaluations: list[dict], folder: ModelFolder) -> list[str] | None:
    """Hub ids of the training data.

    The corpus of ``training_config.json`` when it is a Hub id, and the synthetic (DRR) datasets evaluated,
    whose test split is the held-out part of that corpus. ``None`` when there is none.
    """
    corpus = folder.training.get("anatomy", {}).get("corpus_dir") or folder.training.get("corpus_dir")
    local = {e["dataset"].get("source") for e in evaluations}  # folders the evaluation read: not Hub ids
    ids = [corpus] if corpus and hub_id(corpus) and corpus not in local else []
    ids += [e["dataset"]["id"] for e in evaluations if e["dataset"].get("synthetic") and e["dataset"].get("id")]
    return list(dict.fromkeys(ids)) or None


def eval_results(evaluations: list[dict]) -> list[EvalResult]:
    """One ``EvalResult`` per dataset and macro metric (``INDEX_METRICS``) that the summary holds."""
    out = []
    for e in evaluations:
        ds, macro = e["dataset"], (e.get("summary") or {}).get("macro") or {}
        for key, metric_type, metric_name in INDEX_METRICS:
            if macro.get(key) is None:
                continue
            out.append(
                EvalResult(
                    task_type=TASK_TYPE,
                    task_name="Chest X-ray anatomy segmentation",
                    dataset_type=ds["id"],
                    dataset_name=ds.get("name", ds["id"]),
                    dataset_config=ds.get("config"),
                    dataset_split=ds.get("split"),
                    metric_type=metric_type,
                    metric_name=metric_name,
                    metric_value=round(float(macro[key]), 4),
                )
            )
    return out


def tags_of(kind: str, folder: ModelFolder) -> list[str]:
    """``TAGS``, with ``lora`` for an adapter; the U-Net drops ``paligemma`` (it is not one) and adds ``unet``."""
    if kind == "unet":
        return [t for t in TAGS if t != "paligemma"] + ["unet"]
    return TAGS + (["lora"] if folder.adapter is not None else [])


def card_data(kind: str, folder: ModelFolder, evaluations: list[dict], name: str) -> ModelCardData:
    """The card's YAML metadata for a model of ``kind`` in ``folder``."""
    base = base_model(kind, folder)
    library = {"adapter": "peft", "full": "transformers", "unet": "segmentation-models-pytorch"}[variant(kind, folder)]
    return ModelCardData(
        model_name=name,
        base_model=base,
        datasets=training_datasets(evaluations, folder),
        license=license_of(kind, folder),
        language=["en"],
        library_name=library,
        pipeline_tag="image-segmentation" if kind == "unet" else "image-text-to-text",
        tags=tags_of(kind, folder),
        eval_results=eval_results(evaluations) or None,
    )


# --------------------------------------------------------------------------------------------------
# Body
# --------------------------------------------------------------------------------------------------


def _fmt(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def _escape(text: str) -> str:
    """Markdown table cell text: a ``|`` (even inside backticks) would end the cell."""
    return str(text).replace("|", "\\|")


def _display(name: str) -> str:
    return STRUCTURES[name].display if name in STRUCTURES else name


def _part(text: str, value, fmt=_fmt) -> str | None:
    return None if value is None else text.format(fmt(value))


def summary_line(evaluation: dict) -> str:
    """One sentence of an evaluation's headline numbers (macro means over structures unless said otherwise).

    Numbers the results do not hold are left out.
    """
    summary = evaluation.get("summary") or {}
    macro, micro = summary.get("macro") or {}, summary.get("micro") or {}
    parts = [
        _part("macro Dice **{}**", macro.get("dice")),
        _part("IoU {}", macro.get("iou")),
        _part("HD95 {} px", macro.get("hd95_px"), lambda v: _fmt(v, 1)),
        _part("HD95 {} mm", macro.get("hd95_mm"), lambda v: _fmt(v, 1)),
        _part("box IoU {}", macro.get("box_iou")),
        _part("micro Dice {}", micro.get("dice")),
        _part("invalid answers {}", summary.get("invalid_rate"), _pct),
        _part("{} structure predictions", summary.get("count"), str),
        _part("macro Dice over structures covering >= 1 % of the image {}", summary.get("macro_dice_ge_1pct")),
        _part("{} s per image", evaluation.get("seconds_per_image"), lambda v: f"{v:.2g}"),
    ]
    shown = [part for part in parts if part is not None]
    return ("; ".join(shown) + ".") if shown else "No summary metrics in the results."


def structure_table(per_structure: dict) -> tuple[list[str], list[list[str]]]:
    """Columns and rows of the per-structure table, best Dice first (structures without a Dice last)."""
    with_mm = any(m.get("hd95_mm") is not None for m in per_structure.values())
    columns = ["structure", "name", "Dice", "IoU", "HD95 px", *(["HD95 mm"] * with_mm), "box IoU", "count", "invalid"]
    order = sorted(per_structure.items(), key=lambda kv: (kv[1].get("dice") is None, -(kv[1].get("dice") or 0), kv[0]))
    rows = [
        [f"`{name}`", _display(name), _fmt(m.get("dice")), _fmt(m.get("iou")), _fmt(m.get("hd95_px"), 1),
         *([_fmt(m.get("hd95_mm"), 1)] if with_mm else []), _fmt(m.get("box_iou")), str(m.get("count", "-")),
         _pct(m.get("invalid_rate"))]
        for name, m in order
    ]  # fmt: skip
    return columns, rows


def evaluation_sections(evaluations: list[dict]) -> list[dict]:
    """Template input per evaluation: dataset description, summary sentence and per-structure table."""
    sections = []
    for e in evaluations:
        ds = e["dataset"]
        columns, rows = structure_table(e.get("per_structure") or {})
        about = [f"`{ds['id']}`", f"split `{ds.get('split', '?')}`", f"{ds.get('images', '?')} images"]
        about += ["synthetic (DRR)" if ds.get("synthetic") else "real radiographs"]
        if ds.get("lung_definition"):
            about.append(f"lung definition: {ds['lung_definition']}")
        sections.append({"title": ds.get("name", ds["id"]), "about": ", ".join(about), "summary": summary_line(e),
                         "columns": columns, "rows": rows})  # fmt: skip
    return sections


def study_sections(studies: dict | None, model_id: str) -> list[dict]:
    """Template input per study: its rows of ``model_id`` as a table and/or its summary as ``key: value`` lines.

    Rows without a ``model`` key are shared by all models; studies with nothing for this model are left out.
    """
    sections = []
    for key, study in (studies or {}).items():
        if not isinstance(study, dict):
            continue
        rows = [r for r in study.get("rows") or [] if r.get("model", model_id) == model_id]
        columns = list(dict.fromkeys(k for r in rows for k in r if k != "model"))
        table = [[_cell(r.get(c)) for c in columns] for r in rows]
        summary = [f"{k}: {_cell(v)}" for k, v in (study.get("summary") or {}).items() if not isinstance(v, dict)]
        if table or summary:
            title = key.replace("_", " ").capitalize()
            sections.append({"title": title, "columns": columns, "rows": table, "summary": summary})
    return sections


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return "-" if value is None else _escape(value)


def final_loss(metrics: list[dict]) -> float | None:
    """The last logged training ``loss`` (the trainer's closing ``train_loss`` is an average, not used)."""
    losses = [m["loss"] for m in metrics if isinstance(m, dict) and m.get("loss") is not None]
    return losses[-1] if losses else None


def training_stages(training: dict) -> list[dict]:
    """The stages of a model trained in several runs, first first: each a ``training_config.json`` dict.

    ``train.sft`` and ``train.unet`` record the configuration of the model a run started from under
    ``initialised_from`` (``train.lineage``).
    """
    stages = []
    while training:
        stages.insert(0, training)
        training = training.get("initialised_from") or {}
    return stages


def stage_summary(training: dict) -> str:
    """One stage as text: corpus, steps, batch and learning rate (a VLM's nested or a U-Net's flat config)."""
    if "sft" not in training and "anatomy" not in training:  # train.unet writes one flat dictionary
        steps, epochs = training.get("max_steps"), training.get("epochs")
        length = f"{steps} steps" if steps else f"{epochs} epochs"
        return (f"`{training.get('corpus_dir')}`, {length} of {training.get('batch_size', '?')} at "
                f"{training.get('size')} px, lr {training.get('learning_rate')}")  # fmt: skip
    anatomy, sft = training.get("anatomy", {}), training.get("sft", {})
    steps = sft.get("max_steps", -1)
    length = f"{steps} steps" if steps and steps > 0 else f"{sft.get('num_train_epochs')} epochs"
    batch = sft.get("per_device_train_batch_size", "?")
    return f"`{anatomy.get('corpus_dir')}`, {length} of {batch}, lr {sft.get('learning_rate')}"


def vlm_recipe(folder: ModelFolder) -> list[tuple[str, str]]:
    """``(setting, value)`` rows of a VLM's training recipe, from ``training_config.json`` and the adapter config."""
    stages = training_stages(folder.training)
    anatomy, sft = folder.training.get("anatomy", {}), folder.training.get("sft", {})
    first = stages[0].get("anatomy", {}) if stages else {}
    name = first.get("model_name_or_path") or (folder.adapter or {}).get("base_model_name_or_path")
    tiny = "none: a tiny PaliGemma-architecture model built from a config, trained from scratch"
    rows = [("base model", tiny if name == "tiny" else f"`{name}`")] if name else []
    if folder.adapter is not None or anatomy.get("lora"):
        adapter = folder.adapter or {}
        targets = adapter.get("target_modules")
        targets = ", ".join(sorted(targets)) if isinstance(targets, list) else targets
        r, alpha = adapter.get("r", anatomy.get("lora_r")), adapter.get("lora_alpha", anatomy.get("lora_alpha"))
        dropout = adapter.get("lora_dropout", anatomy.get("lora_dropout"))
        rows.append(("weights trained", f"LoRA r={r}, alpha={alpha}, dropout {dropout}"))
        if targets:
            rows.append(("LoRA targets", f"`{targets}`"))
    elif anatomy:
        rows.append(("weights trained", "all" if name == "tiny" else "all language-model weights"))
    if anatomy:
        rows.append(("vision tower", "trained" if anatomy.get("train_vision") else "frozen"))
        rows.append(("training corpus", f"`{anatomy.get('corpus_dir')}`"))
        rows.append(("structures per answer", str(anatomy.get("structures_per_sample"))))
    if len(stages) > 1:
        rows.append(("training stages", "; ".join(f"{i}: {stage_summary(s)}" for i, s in enumerate(stages, 1))))
    if sft:
        steps = sft.get("max_steps", -1)
        batch = sft.get("per_device_train_batch_size", "?")
        accumulation = sft.get("gradient_accumulation_steps", 1)
        rows += [
            ("optimiser", f"{sft.get('optim')}, lr {sft.get('learning_rate')}, {sft.get('lr_scheduler_type')} decay"),
            ("steps" if len(stages) < 2 else "steps (last stage)",
             str(steps) if steps and steps > 0 else f"{sft.get('num_train_epochs')} epochs"),
            ("batch", f"{batch} per device" + (f" x {accumulation} accumulation" if accumulation != 1 else "")),
            ("precision", "bf16" if sft.get("bf16") else "fp16" if sft.get("fp16") else "fp32"),
        ]  # fmt: skip
    if folder.image_size:
        rows.append(("resolution", f"{folder.image_size} x {folder.image_size} px"))
    return rows


def unet_recipe(folder: ModelFolder) -> list[tuple[str, str]]:
    """``(setting, value)`` rows of the U-Net's training recipe, from its flat ``training_config.json``."""
    c = folder.training
    if not c:
        return []
    stages = training_stages(c)
    rows = [
        ("network", f"U-Net (segmentation-models-pytorch), encoder `{c.get('encoder')}`, no pretrained weights"),
        ("training corpus", f"`{c.get('corpus_dir')}`"),
        ("resolution", f"{c.get('size')} x {c.get('size')} px"),
        ("loss", "Dice + binary cross-entropy, one sigmoid channel per structure"),
    ]
    if len(stages) > 1:
        rows.append(("training stages", "; ".join(f"{i}: {stage_summary(s)}" for i, s in enumerate(stages, 1))))
    return rows + [
        ("optimiser", f"AdamW, lr {c.get('learning_rate')}, cosine decay"),
        ("steps" if len(stages) < 2 else "steps (last stage)", str(c.get("max_steps") or f"{c.get('epochs')} epochs")),
        ("batch", str(c.get("batch_size"))),
    ]


def recipe_rows(kind: str, folder: ModelFolder) -> list[tuple[str, str]]:
    """The training recipe as ``(setting, value)`` rows, with the final loss; empty without a training config."""
    rows = unet_recipe(folder) if kind == "unet" else vlm_recipe(folder) if folder.training or folder.adapter else []
    loss = final_loss(folder.metrics)
    if loss is not None:
        rows.append(("final training loss", f"{loss:.4g}"))
    return [(key, _escape(value)) for key, value in rows]


def lowest_structures(evaluations: list[dict], n: int = LOWEST_SHOWN) -> list[dict]:
    """Per evaluation, the ``n`` structures with the lowest Dice: ``{"dataset", "structures": [(name, dice)]}``."""
    out = []
    for e in evaluations:
        scored = [(name, m["dice"]) for name, m in (e.get("per_structure") or {}).items() if m.get("dice") is not None]
        if scored:
            worst = sorted(scored, key=lambda kv: (kv[1], kv[0]))[:n]
            out.append({"dataset": e["dataset"].get("name", e["dataset"]["id"]), "structures": worst})
    return out


def trained_on_embedded_ct(evaluations: list[dict], folder: ModelFolder) -> bool:
    """Whether the training corpus is the embedded-CT demonstration corpus (one CT's deformations).

    Read from the corpus's ``build_config.json`` when the training corpus is a local folder, else from the
    names of the synthetic datasets evaluated.
    """
    corpus = folder.training.get("anatomy", {}).get("corpus_dir") or folder.training.get("corpus_dir")
    build = _read_json(Path(corpus) / "build_config.json") if corpus and Path(corpus).is_dir() else None
    if build is not None:
        return build.get("source") == "embedded"
    names = [e["dataset"].get("name", "").lower() for e in evaluations if e["dataset"].get("synthetic")]
    return any("embedded" in name for name in names)


def plot_links(results: dict) -> dict[str, str]:
    """``{plot name: link relative to the card}``: every plot of the results, as ``plots/<file name>``."""
    return {name: f"plots/{Path(path).name}" for name, path in (results.get("plots") or {}).items() if path}


def render_card(
    results: dict,
    model_id: str,
    model_dir: Path | str | None = None,
    repo_id: str | None = None,
    *,
    plots: dict[str, str] | None = None,
) -> ModelCard:
    """Render the card of ``model_id`` from the results of ``python -m eval`` and its model folder (not written).

    Args:
        results: the parsed results JSON (``load_results``).
        model_id: an ``id`` of ``results["models"]``; only that model's evaluations are shown.
        model_dir: the training run's output folder, for the recipe and adapter/full detection; optional.
        repo_id: the Hub repository the card is for (usage snippets and the model name); optional.
        plots: ``{name: link}`` of the plots to show; default every plot of the results (``plot_links``).

    Raises:
        ValueError: when the results hold no evaluation of ``model_id`` (see ``select_model``).
    """
    model, evaluations = select_model(results, model_id)
    folder = read_model_folder(model_dir)
    kind, name = model["kind"], model_name_of(model_id, model_dir, repo_id)
    data = card_data(kind, folder, evaluations, name)
    return ModelCard.from_template(
        data,
        template_path=str(TEMPLATE),
        title=name,
        variant=variant(kind, folder),
        model_ref=repo_id or (str(model_dir) if model_dir is not None else "REPO_OR_FOLDER"),
        on_hub=repo_id is not None or model_dir is None,
        parameters=f"{model['parameters'] / 1e6:.1f} M" if model.get("parameters") else None,
        encoder=folder.training.get("encoder") if kind == "unet" else None,
        from_scratch=from_scratch(kind, folder),
        recipe=recipe_rows(kind, folder),
        evaluations=evaluation_sections(evaluations),
        studies=study_sections(results.get("studies"), model_id),
        plots=plot_links(results) if plots is None else plots,
        lowest=lowest_structures(evaluations),
        multipart=[(s, _display(s)) for s in MULTIPART],
        embedded_ct=trained_on_embedded_ct(evaluations, folder),
        eval_command=results.get("command"),
        eval_created=results.get("created"),
        citation=CITATION,
    )


# --------------------------------------------------------------------------------------------------
# Writing and pushing
# --------------------------------------------------------------------------------------------------


def copy_plots(results: dict, results_dir: Path, dest: Path) -> dict[str, str]:
    """Copy the results' plots (paths relative to ``results_dir`` or absolute) into ``dest``.

    Returns:
        ``{name: "plots/<file name>"}`` for the plots that exist (missing files are skipped, not linked).
    """
    links = {}
    for name, path in (results.get("plots") or {}).items():
        source = Path(results_dir) / path if path else None
        if source is None or not source.is_file():
            continue
        dest.mkdir(parents=True, exist_ok=True)
        if source.resolve() != (dest / source.name).resolve():  # the results may already sit beside the card
            shutil.copy2(source, dest / source.name)
        links[name] = f"plots/{source.name}"
    return links


def write_card(
    results_path: Path | str,
    model_id: str,
    model_dir: Path | str | None = None,
    repo_id: str | None = None,
    output: Path | str | None = None,
) -> tuple[Path, ModelCard, dict[str, str]]:
    """Render and write the card (default ``model_dir/README.md``) and copy the plots into ``plots/`` beside it.

    Returns:
        The card's path, the card, and ``{name: link}`` of the plots copied.

    Raises:
        ValueError: when neither ``model_dir`` nor ``output`` says where to write, or the model is not in the results.
    """
    if output is None and model_dir is None:
        raise ValueError("say where the card goes: pass --model_dir (writes MODEL_DIR/README.md) or --output")
    results_path = Path(results_path)
    results = load_results(results_path)
    select_model(results, model_id)  # fail on a wrong model before copying anything
    path = Path(output) if output is not None else Path(model_dir) / "README.md"
    links = copy_plots(results, results_path.parent, path.parent / "plots")
    card = render_card(results, model_id, model_dir, repo_id, plots=links)
    path.parent.mkdir(parents=True, exist_ok=True)
    card.save(path)
    return path, card, links


def push_card(card: ModelCard, repo_id: str, plot_files: list[Path] = (), api=None) -> list[str]:
    """Upload the card (``ModelCard.push_to_hub``) and the plot files it links (into ``plots/``) to ``repo_id``.

    Args:
        card: the rendered card.
        repo_id: the model's Hub repository (it must exist: the training run pushed the model there).
        plot_files: the copied plots beside the card (``write_card``), all in one folder.
        api: an ``HfApi`` (default a new one).

    Returns:
        The paths written in the repository.
    """
    card.push_to_hub(repo_id)
    uploaded = ["README.md"]
    if plot_files:
        from huggingface_hub import HfApi

        names = sorted(Path(p).name for p in plot_files)
        api = api or HfApi()
        api.upload_folder(repo_id=repo_id, folder_path=str(Path(plot_files[0]).parent), path_in_repo="plots",
                          allow_patterns=names, commit_message="CheXanatomy: model card plots")  # fmt: skip
        uploaded += [f"plots/{name}" for name in names]
    return uploaded
