"""The model card: rendered with ``huggingface_hub.ModelCard.from_template`` from evaluation results and a model folder.

    python -m model_card --results outputs/eval/results.json --model vlm --model_dir outputs/tiny_vlm

Nothing in a card is written by hand. It reads top to bottom as the card is made:

* ``inputs``: the results JSON of ``python -m eval`` (``chexanatomy.results``) and the model folder
  (``ModelFolder``: adapter config, ``TrainingRecord``, metrics, processor);
* this module's metadata: license, base model, library, pipeline tag and the ``model-index`` of evaluation results;
* ``recipe``: the training recipe table, every stage of the ``TrainingRecord``;
* ``sections``: the body's tables (per evaluation, VLM vs U-Net, per study), the weakest structures and the plots;
* ``render_card`` puts them into the template; ``write_card`` and ``push_card`` write and upload it.

Units: Dice, IoU and box IoU in [0, 1]; HD95 in pixels of the original image (``hd95_px``) or mm (``hd95_mm``);
invalid rates are fractions in [0, 1], shown as percentages. Imports nothing of ours but the core package.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from chexanatomy import CITATION
from chexanatomy.anatomy import MULTIPART
from chexanatomy.locate import hub_id
from chexanatomy.results import display_name, load_results

from .inputs import ModelFolder, read_model_folder, select_model, trained_on_embedded_ct
from .recipe import recipe_rows
from .sections import comparison_section, evaluation_sections, lowest_structures, plot_links, study_sections

TEMPLATE = Path(__file__).parent / "templates" / "model_card.md"
TAGS = ["chexanatomy", "chest-x-ray", "anatomy", "segmentation", "paligemma", "drr", "medical-imaging"]
TASK_TYPE = "image-segmentation"
# (key in summary["macro"], model-index metric type, metric name): the macro means the model-index carries.
INDEX_METRICS = (
    ("dice", "dice", "macro Dice"),
    ("iou", "iou", "macro IoU"),
    ("hd95_px", "hd95", "macro HD95 (px)"),
    ("invalid_rate", "invalid_rate", "invalid-answer rate"),
)


# --------------------------------------------------------------------------------------------------
# Metadata
# --------------------------------------------------------------------------------------------------


def variant(kind: str, folder: ModelFolder) -> str:
    """``"adapter"`` (a LoRA adapter folder), ``"full"`` (a whole VLM) or ``"unet"``."""
    if kind == "unet":
        return "unet"
    return "adapter" if folder.adapter is not None else "full"


def first_model_name(folder: ModelFolder) -> str | None:
    """What the first training stage started from (a continued run's own start is a local folder)."""
    stages = folder.stages()
    return stages[0].start if stages else None


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
    corpus = folder.training.corpus_hub_id if folder.training is not None else None
    local = {e["dataset"].get("source") for e in evaluations}  # folders the evaluation read: not Hub ids
    ids = [corpus] if corpus and corpus not in local else []
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
        encoder=folder.training.encoder if kind == "unet" and folder.training is not None else None,
        from_scratch=from_scratch(kind, folder),
        recipe=recipe_rows(kind, folder),
        evaluations=evaluation_sections(evaluations),
        comparison=comparison_section(results),
        studies=study_sections(results.get("studies"), model_id),
        plots=plot_links(results) if plots is None else plots,
        lowest=lowest_structures(evaluations),
        multipart=[(s, display_name(s)) for s in MULTIPART],
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
