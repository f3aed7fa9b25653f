"""Model cards rendered from evaluation results and model folders: metadata, model-index, tables, plots, CLI."""

import copy
import json
import re

import pytest
from huggingface_hub import ModelCard
from PIL import Image

from chexanatomy.training_record import read_training_record, sft_record, unet_record
from model_card.__main__ import main
from model_card.card import push_card, render_card, write_card

BASE = "google/paligemma2-3b-pt-448"
DRR = {"id": "chexanatomy/drr", "name": "CheXanatomy DRR (embedded CT)", "config": "default", "split": "test",
       "source": "outputs/drr", "images": 6, "synthetic": True, "lung_definition": "full"}  # fmt: skip
JSRT = {"id": "chexanatomy/jsrt-scr", "name": "JSRT / SCR lung fields", "config": "default", "split": "validation",
        "images": 12, "synthetic": False, "lung_definition": "scr"}  # fmt: skip
DICE = {  # per structure Dice of the VLM on the DRR test split; the 5 lowest are the ribs and the stomach
    "heart": 0.91, "lung_left": 0.95, "lung_right": 0.94, "trachea": 0.81, "aorta": 0.77, "clavicle_left": 0.66,
    "rib_left_12": 0.21, "rib_right_12": 0.24, "rib_left_11": 0.33, "stomach": 0.41, "rib_right_1": 0.52,
}  # fmt: skip


def metrics(dice: float) -> dict:
    return {"dice": dice, "iou": dice * 0.9, "hd95_px": 20 * (1 - dice), "hd95_mm": None, "box_iou": 0.8,
            "count": 6, "invalid_rate": 0.0, "hd95_undefined": 0}  # fmt: skip


def evaluation(model: str, dataset: dict, dice: dict) -> dict:
    macro = sum(dice.values()) / len(dice)
    return {
        "model": model, "dataset": dataset, "seconds_per_image": 0.8,
        "summary": {"macro": {"dice": macro, "iou": macro * 0.9, "hd95_px": 5.1, "hd95_mm": None, "box_iou": 0.8,
                              "invalid_rate": 0.02}, "micro": {"dice": 0.85, "iou": 0.75}, "count": 6 * len(dice),
                    "invalid_rate": 0.02, "structures": len(dice), "macro_dice_ge_1pct": macro},
        "per_structure": {name: metrics(d) for name, d in dice.items()},
    }  # fmt: skip


@pytest.fixture
def results() -> dict:
    return {
        "schema_version": 1, "created": "2026-11-28T21:00:00Z", "command": "python -m eval --models vlm unet",
        "models": [{"id": "vlm", "kind": "vlm", "source": "outputs/vlm", "parameters": 3_000_000_000},
                   {"id": "unet", "kind": "unet", "source": "outputs/unet", "parameters": 6_600_000}],
        "evaluations": [
            evaluation("vlm", DRR, DICE), evaluation("vlm", JSRT, {"lung_left": 0.71, "lung_right": 0.73}),
            evaluation("unet", DRR, {name: 0.5 for name in DICE}), evaluation("unet", JSRT, {"lung_left": 0.6}),
        ],
        "studies": {"robustness": {"rows": [{"model": m, "perturbation": "rotation", "magnitude": 5.0, "dice": d}
                                            for m, d in (("vlm", 0.7), ("unet", 0.6))]},
                    "domain_gap": {"summary": {"histogram_w1_drr_vs_real": 0.1}},
                    "few_shot": {"rows": [{"start": "anatomy", "k": 4, "dice": 0.5}]}},
        "plots": {"per_structure": "plots/per_structure_dice.png", "robustness": "plots/robustness.png"},
    }  # fmt: skip


def write_json(path, value):
    path.write_text(json.dumps(value))


def vlm_folder(root, model_name_or_path=BASE, adapter=True):
    """A training run's output folder as ``python -m train.sft`` leaves it (the weights are not read)."""
    root.mkdir()
    lora = adapter and model_name_or_path != "tiny"
    anatomy = {"model_name_or_path": model_name_or_path, "corpus_dir": "chexanatomy/drr", "lora": lora, "lora_r": 16,
               "lora_alpha": 32, "lora_dropout": 0.05, "train_vision": False, "structures_per_sample": 20}  # fmt: skip
    sft = {"learning_rate": 5e-5, "lr_scheduler_type": "linear", "optim": "adamw_torch", "max_steps": 3000,
           "per_device_train_batch_size": 8, "gradient_accumulation_steps": 4, "bf16": True}  # fmt: skip
    sft_record(anatomy, sft).save(root)
    log = [{"loss": 2.5, "step": 10}, {"loss": 1.25, "step": 20}, {"train_loss": 1.9, "step": 20}]
    write_json(root / "training_metrics.json", log)
    write_json(root / "processor_config.json", {"image_processor": {"size": {"height": 448, "width": 448}}})
    if lora:
        targets = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
        adapter_config = {"base_model_name_or_path": model_name_or_path, "peft_type": "LORA", "r": 16,
                          "lora_alpha": 32, "lora_dropout": 0.05, "target_modules": targets}  # fmt: skip
        write_json(root / "adapter_config.json", adapter_config)
    return root


def unet_folder(root):
    root.mkdir()
    unet_record({"corpus_dir": "outputs/drr", "size": 256, "encoder": "resnet18", "max_steps": 800, "batch_size": 8,
                 "learning_rate": 0.002}).save(root)  # fmt: skip
    write_json(root / "training_metrics.json", [{"step": 1, "loss": 1.6}, {"step": 800, "loss": 0.35}])
    return root


def saved_and_loaded(card: ModelCard, path) -> ModelCard:
    card.save(path)
    return ModelCard.load(path)


def section(text: str, title: str) -> str:
    return re.search(rf"^## {title}\n(.*?)(?=^## |\Z)", text, re.S | re.M).group(1)


def table_rows(text: str) -> dict[str, list[str]]:
    """``{structure id: cells}`` of every per-structure table row in ``text``."""
    return {m.group(1): m.group(0).split(" | ") for m in re.finditer(r"^\| `(\w+)` \|.*$", text, re.M)}


def test_model_index_carries_each_datasets_macro_dice_with_its_split(results, tmp_path):
    folder = vlm_folder(tmp_path / "vlm")
    card = render_card(results, "vlm", folder, "chexanatomy/paligemma2-3b-anatomy-448")
    card = saved_and_loaded(card, tmp_path / "README.md")

    index = card.data.eval_results
    dice = {(r.dataset_type, r.dataset_split): r.metric_value for r in index if r.metric_type == "dice"}
    assert dice == pytest.approx({("chexanatomy/drr", "test"): sum(DICE.values()) / len(DICE),
                                  ("chexanatomy/jsrt-scr", "validation"): 0.72}, abs=1e-4)  # fmt: skip
    assert {r.metric_type for r in card.data.eval_results} == {"dice", "iou", "hd95", "invalid_rate"}
    assert {r.task_type for r in card.data.eval_results} == {"image-segmentation"}
    assert card.data.model_name == "paligemma2-3b-anatomy-448"
    assert 0.5 not in [r.metric_value for r in card.data.eval_results]  # the U-Net's numbers stay on its own card


@pytest.mark.parametrize(
    ("kind", "license", "library_name", "pipeline_tag", "base_model"),
    [
        ("adapter", "gemma", "peft", "image-text-to-text", BASE),
        ("full", "gemma", "transformers", "image-text-to-text", BASE),
        ("tiny", "apache-2.0", "transformers", "image-text-to-text", None),
        ("unet", "apache-2.0", "segmentation-models-pytorch", "image-segmentation", None),
    ],
)
def test_metadata_follows_the_kind_of_model(results, tmp_path, kind, license, library_name, pipeline_tag, base_model):
    if kind == "unet":
        folder, model = unet_folder(tmp_path / "unet"), "unet"
    else:
        folder, model = vlm_folder(tmp_path / kind, "tiny" if kind == "tiny" else BASE, kind == "adapter"), "vlm"
    card = saved_and_loaded(render_card(results, model, folder, None), tmp_path / "README.md")

    data = card.data
    assert (data.license, data.library_name, data.pipeline_tag, data.base_model) == (
        license, library_name, pipeline_tag, base_model
    )  # fmt: skip
    assert {"chexanatomy", "chest-x-ray", "anatomy", "segmentation", "drr", "medical-imaging"} <= set(card.data.tags)
    assert ("paligemma" in card.data.tags) == (kind != "unet")
    assert card.data.datasets == ["chexanatomy/drr"]
    usage = section(card.text, "How to use")
    assert f'load_segmenter("{folder}")' in usage
    assert (f'PeftModel.from_pretrained(base, "{folder}")' in usage) == (kind == "adapter")
    assert (f'AutoModelForImageTextToText.from_pretrained("{BASE}")' in usage) == (kind == "adapter")
    assert (f'AutoModelForImageTextToText.from_pretrained("{folder}")' in usage) == (kind in ("full", "tiny"))
    assert (f'pipeline("image-text-to-text", model="{folder}")' in usage) == (kind in ("full", "tiny"))
    assert (f'smp.from_pretrained("{folder}")' in usage) == (kind == "unet")
    plain_first = usage.index("```python\nimport" if kind == "unet" else "from transformers import")
    assert plain_first < usage.index("from chexanatomy")  # the plain library calls come before our helpers


def test_training_recipe_comes_from_the_model_folder(results, tmp_path):
    card = render_card(results, "vlm", vlm_folder(tmp_path / "vlm"), None)
    recipe = section(card.text, "Training")

    for expected in (f"`{BASE}`", "LoRA r=16, alpha=32", r"(q_proj\|k_proj\|", "lr 5e-05", "| steps | 3000 |",
                     "8 per device x 4 accumulation", "448 x 448 px", "| final training loss | 1.25 |"):  # fmt: skip
        assert expected in recipe
    unet = section(render_card(results, "unet", unet_folder(tmp_path / "unet"), None).text, "Training")
    assert "`resnet18`" in unet and "256 x 256 px" in unet and "| final training loss | 0.35 |" in unet


def test_a_model_trained_in_stages_lists_every_stage(results, tmp_path):
    folder = vlm_folder(tmp_path / "vlm", model_name_or_path="tiny")
    stage1 = read_training_record(folder)
    stage1.path = "outputs/stage1"
    anatomy, sft = stage1.options["anatomy"], stage1.options["sft"]
    sft_record({**anatomy, "model_name_or_path": "outputs/stage1", "corpus_dir": "outputs/drr40"},
               {**sft, "max_steps": 2000, "learning_rate": 5e-4}, stage1).save(folder)  # fmt: skip
    recipe = section(render_card(results, "vlm", folder, None).text, "Training")
    assert "trained from scratch" in recipe  # the base is the first stage's, not the local folder
    assert "1: `chexanatomy/drr`, 3000 steps of 8, lr 5e-05; 2: `outputs/drr40`, 2000 steps of 8, lr 0.0005" in recipe
    assert "| steps (last stage) | 2000 |" in recipe
    data = render_card(results, "vlm", folder, None).data  # metadata follows the lineage too, not the local folder
    assert data.base_model is None and data.license == "apache-2.0" and data.language == ["en"]


def test_a_unet_continued_at_another_size_lists_both_stages(results, tmp_path):
    folder = unet_folder(tmp_path / "unet")
    stage1 = read_training_record(folder)
    stage1.path = "outputs/unet"
    unet_record({**stage1.options, "size": 384, "max_steps": 900, "learning_rate": 5e-4, "init_from": "outputs/unet"},
                stage1).save(folder)  # fmt: skip
    recipe = section(render_card(results, "unet", folder, None).text, "Training")
    assert ("1: `outputs/drr`, 800 steps of 8 at 256 px, lr 0.002; "
            "2: `outputs/drr`, 900 steps of 8 at 384 px, lr 0.0005") in recipe  # fmt: skip
    assert "| steps (last stage) | 900 |" in recipe and "384 x 384 px" in recipe


def test_per_structure_table_lists_every_structure_with_its_dice_best_first(results, tmp_path):
    card = render_card(results, "vlm", vlm_folder(tmp_path / "vlm"), None)
    drr = card.text.split("### CheXanatomy DRR (embedded CT)")[1].split("### JSRT")[0]

    rows = table_rows(drr)
    assert list(rows) == sorted(DICE, key=DICE.get, reverse=True)
    assert {name: cells[2] for name, cells in rows.items()} == {name: f"{d:.3f}" for name, d in DICE.items()}
    assert rows["lung_left"][1] == "left lung"  # display name beside the id
    assert "split `test`" in drr and "macro Dice **" in drr
    assert set(table_rows(card.text.split("### JSRT / SCR lung fields")[1])) == {"lung_left", "lung_right"}


def test_lowest_structures_and_multipart_unions_are_named_under_limitations(results, tmp_path):
    limitations = section(render_card(results, "vlm", vlm_folder(tmp_path / "vlm"), None).text, "Limitations")

    lowest = sorted(DICE, key=DICE.get)[:5]
    line = next(s for s in limitations.splitlines() if "CheXanatomy DRR" in s)
    assert all(f"`{name}` {DICE[name]:.3f}" in line for name in lowest)
    assert "heart" not in line
    assert all(f"`{name}`" in limitations for name in ("ribs_left", "ribs_right", "costal_cartilages"))
    assert "single chest CT" in limitations and "Not for clinical use" in limitations


def test_missing_studies_plots_and_optional_numbers_still_render(results, tmp_path):
    sparse = copy.deepcopy(results)
    del sparse["studies"], sparse["plots"]
    for e in sparse["evaluations"]:
        e.pop("seconds_per_image")
        e["summary"] = {"macro": {"dice": e["summary"]["macro"]["dice"], "hd95_px": None}}
        for m in e["per_structure"].values():
            del m["box_iou"], m["hd95_mm"]
    card = saved_and_loaded(render_card(sparse, "vlm", None, None), tmp_path / "README.md")

    assert "## Studies" not in card.text and "## Plots" not in card.text
    assert {r.metric_type for r in card.data.eval_results} == {"dice"}
    assert card.data.license is None and card.data.library_name == "transformers"  # no folder: base unknown
    assert 'load_segmenter("REPO_OR_FOLDER")' in card.text
    assert len(re.findall(r"^\| `\w+` \|", card.text, re.M)) == len(DICE) + 2  # both datasets' tables


def test_only_this_models_study_rows_are_shown(results, tmp_path):
    studies = section(render_card(results, "unet", unet_folder(tmp_path / "unet"), None).text, "Studies")

    assert "| rotation | 5 | 0.6 |" in studies and "0.7" not in studies
    assert "histogram_w1_drr_vs_real: 0.1" in studies and "| anatomy | 4 | 0.5 |" in studies


def test_a_studys_per_structure_breakdown_stays_out_of_the_cards_table(results, tmp_path):
    """A robustness row carries each structure's scores as a dict: a reader sees the row, not a Python dict dump."""
    rows = results["studies"]["robustness"]["rows"]
    for row in rows:
        row["per_structure"] = {"heart": {"dice": 0.9, "images": 2}}
    studies = section(render_card(results, "unet", unet_folder(tmp_path / "unet"), None).text, "Studies")

    assert "| rotation | 5 | 0.6 |" in studies
    assert "per_structure" not in studies and "{" not in studies and "[]" not in studies


def test_a_model_missing_from_the_results_is_a_clear_error(results, tmp_path, capsys):
    with pytest.raises(ValueError, match=r"no model 'unet3d'; models in them: \['unet', 'vlm'\]"):
        render_card(results, "unet3d", None, None)

    write_json(tmp_path / "results.json", results)
    argv = ["--results", str(tmp_path / "results.json"), "--model", "unet3d", "--output", str(tmp_path / "c.md")]
    assert main(argv) == 2
    assert "no model 'unet3d'" in capsys.readouterr().err
    assert not (tmp_path / "c.md").exists()


def eval_folder(root, results):
    """``python -m eval``'s output: results.json with the plots beside it (the robustness plot is missing)."""
    (root / "plots").mkdir(parents=True)
    Image.new("RGB", (8, 8), "red").save(root / "plots" / "per_structure_dice.png")
    write_json(root / "results.json", results)
    return root / "results.json"


def test_cli_writes_the_card_next_to_the_model_and_copies_linked_plots(results, tmp_path, capsys):
    results_path = eval_folder(tmp_path / "eval", results)
    model_dir = vlm_folder(tmp_path / "run")
    (model_dir / "README.md").write_text("TRL's auto-generated card")

    argv = ["--results", str(results_path), "--model", "vlm", "--model_dir", str(model_dir),
            "--hub_model_id", "me/anatomy"]  # fmt: skip
    assert main(argv) == 0

    card = ModelCard.load(model_dir / "README.md")
    assert card.data.library_name == "peft" and "TRL's" not in card.text
    assert sorted(p.name for p in (model_dir / "plots").iterdir()) == ["per_structure_dice.png"]
    assert "![per structure](plots/per_structure_dice.png)" in card.text
    assert "robustness.png" not in card.text  # not produced, so not linked
    assert f"-> {model_dir / 'README.md'}" in capsys.readouterr().out


def test_push_uploads_the_card_and_its_plots(results, tmp_path, monkeypatch):
    results_path = eval_folder(tmp_path / "eval", results)
    path, card, links = write_card(results_path, "unet", unet_folder(tmp_path / "unet"), "me/unet-anatomy")
    (path.parent / "plots" / "stale.png").write_bytes(b"from an earlier run")  # not linked: not uploaded
    pushed, uploads = [], []
    monkeypatch.setattr(ModelCard, "push_to_hub", lambda self, repo_id: pushed.append((repo_id, str(self))))

    class FakeApi:
        def upload_folder(self, **kwargs):
            uploads.append(kwargs)

    files = push_card(card, "me/unet-anatomy", [path.parent / link for link in links.values()], api=FakeApi())

    assert files == ["README.md", "plots/per_structure_dice.png"]
    assert pushed == [("me/unet-anatomy", path.read_text())]
    assert [(u["repo_id"], u["path_in_repo"], u["folder_path"], u["allow_patterns"]) for u in uploads] == [
        ("me/unet-anatomy", "plots", str(path.parent / "plots"), ["per_structure_dice.png"])
    ]


def test_the_vlm_card_shows_the_comparison_with_the_unet_from_the_results(results, tmp_path):
    evaluation = section(render_card(results, "vlm", vlm_folder(tmp_path / "vlm"), None).text, "Evaluation")
    comparison = evaluation.split("### VLM vs U-Net")[1].split("\n### ")[0]

    rows = {tuple(c.strip() for c in line.strip("|").split("|")[:2]): [c.strip() for c in line.strip("|").split("|")]
            for line in comparison.splitlines() if line.startswith("| ") and "---" not in line}  # fmt: skip
    assert rows["setting", "metric"] == ["setting", "metric", "VLM", "U-Net", "VLM - U-Net", "reference boxes"]
    vlm_dice = sum(DICE.values()) / len(DICE)  # the fixture's macro_dice_ge_1pct; the U-Net's is 0.5
    drr = rows["CheXanatomy DRR (embedded CT) (test)", "macro Dice, structures >= 1 % of the image"]
    assert drr[2:5] == [f"{vlm_dice:.3f}", "0.500", f"{vlm_dice - 0.5:+.3f}"]
    jsrt = rows["JSRT / SCR lung fields (validation, lungs: scr)", "lung-field Dice"]  # the U-Net has lung_left only
    assert jsrt[2:5] == ["0.710", "0.600", "+0.110"]
    assert rows["robustness: rotation 5", "macro Dice"][2:5] == ["0.700", "0.600", "+0.100"]
    assert "unconstrained rate" in comparison
    one_model = copy.deepcopy(results)
    one_model["models"] = [m for m in one_model["models"] if m["kind"] == "vlm"]  # no U-Net evaluated: no table
    assert "VLM vs U-Net" not in render_card(one_model, "vlm", None, None).text
