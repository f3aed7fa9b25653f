"""One command line everywhere: every entry point answers --help with 0, a bad flag or recipe with one line and 2,
takes a --config recipe that the command line overrides, and publishes only as --push_to_hub true --hub_model_id."""

import importlib
import os
from pathlib import Path

import pytest

from chexanatomy.cli import parse_config, run_main

# (module, argv prefix, the function main hands the parsed options to: patched to record them)
ENTRY_POINTS = {
    "build": ("dataset_builder.__main__", ["build"], "build"),
    "train": ("train.sft", ["--bf16", "false"], "train"),  # transformers refuses bf16 on a CPU at parse time
    "train-unet": ("train.unet", [], "train"),
    "train-codec": ("train.codec", [], "train"),
    "eval": ("eval.__main__", [], "run"),
    "card": ("model_card.__main__", [], "write_card"),
    "space": ("space.app", [], "build_demo"),
}
# A recipe for each entry point with two options, the second overridden on the command line; read them back from
# the arguments main passed on; the values expected.
RECIPES = {
    "build": ({"source": "phantom", "size_px": 64}, ["--size_px", "48"], lambda a: (a[0].source, a[0].size_px)),
    "train": ({"corpus_dir": "a", "learning_rate": 0.5}, ["--learning_rate", "0.25"],
              lambda a: (a[0].corpus_dir, a[1].learning_rate)),
    "train-unet": ({"corpus_dir": "a", "size": 64}, ["--size", "48"], lambda a: (a[0].corpus_dir, a[0].size)),
    "train-codec": ({"corpus_dir": "a", "steps": 64}, ["--steps", "48"], lambda a: (a[0].corpus_dir, a[0].steps)),
    "eval": ({"corpus_dir": "a", "max_images": 64}, ["--max_images", "48"],
             lambda a: (a[0].corpus_dir, a[0].max_images)),
    "card": ({"model": "a", "output": "64"}, ["--output", "48"], lambda a: (a[1], a[4])),
    "space": ({"vlm": "none", "unet": "none", "max_structures": 64}, ["--max_structures", "48"],
              lambda a: (a[0], a[1], a[3])),
}  # fmt: skip
EXPECTED = {"build": ("phantom", 48), "train": ("a", 0.25), "card": ("a", "48"), "space": (None, None, 48)}


def entry(name):
    module_name, prefix, _ = ENTRY_POINTS[name]
    return importlib.import_module(module_name).main, prefix


def assert_one_line_usage_error(code: int, err: str, *needles: str):
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


@pytest.fixture
def recorded(monkeypatch):
    """Patch what each entry point runs so that main only parses; returns {name: parsed options}."""
    seen = {}

    def patch(name):
        module_name, _, attr = ENTRY_POINTS[name]
        module = importlib.import_module(module_name)

        def record(*args, **kwargs):
            seen[name] = args
            raise SystemExit(0)  # stop before anything else runs

        monkeypatch.setattr(module, attr, record)

    return seen, patch


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_help_exits_zero_and_shows_the_recipe_flag(name, capsys):
    main, prefix = entry(name)
    assert main([*prefix, "--help"]) == 0
    out = capsys.readouterr().out
    assert "--config FILE" in out and "YAML recipe" in out


def test_the_builder_lists_its_commands(capsys):
    main, _ = entry("build")
    assert main(["--help"]) == 0 and "build" in capsys.readouterr().out
    assert main(["card", "--help"]) == 0 and "--output_dir" in capsys.readouterr().out
    assert_one_line_usage_error(main([]), capsys.readouterr().err, "no command")
    assert_one_line_usage_error(main(["bulid"]), capsys.readouterr().err, "unknown command 'bulid'")


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_an_unknown_flag_is_one_line_and_exit_two(name, capsys):
    main, prefix = entry(name)
    assert_one_line_usage_error(main([*prefix, "--no_such_flag", "1"]), capsys.readouterr().err, "--no_such_flag")


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_a_recipe_key_that_is_no_option_is_one_line_and_exit_two(name, tmp_path, capsys):
    main, prefix = entry(name)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("corpus_dri: outputs/drr\n")  # a typo
    assert_one_line_usage_error(main([*prefix, "--config", str(recipe)]), capsys.readouterr().err, "corpus_dri")
    assert_one_line_usage_error(main([*prefix, "--config", str(tmp_path / "missing.yaml")]),
                                capsys.readouterr().err, "missing.yaml")  # fmt: skip


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_the_command_line_overrides_the_recipe(name, tmp_path, recorded):
    seen, patch = recorded
    patch(name)
    main, prefix = entry(name)
    values, override, read = RECIPES[name]
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("".join(f"{k}: {v}\n" for k, v in values.items()))
    with pytest.raises(SystemExit):
        main([*prefix, "--config", str(recipe), *override])
    assert read(seen[name]) == EXPECTED.get(name, ("a", 48))


@pytest.mark.parametrize("name", ["train", "train-unet", "train-codec", "card"])
def test_push_without_a_repository_is_a_usage_error(name, capsys):
    main, prefix = entry(name)
    code = main([*prefix, "--push_to_hub", "true", *(["--output", "x"] if name == "card" else [])])
    assert_one_line_usage_error(code, capsys.readouterr().err, "--hub_model_id")


@pytest.mark.parametrize("old", [["--push_to_hub", "me/unet"], ["--push", "--repo_id", "me/unet"]])
def test_the_old_push_spellings_are_gone(old, capsys):
    main, _ = entry("train-unet")
    assert main(old) == 2 and capsys.readouterr().err.startswith("error: ")


def test_recipe_env_sets_the_environment_as_trl_does(tmp_path, monkeypatch):
    from train.unet import UNetTrainConfig

    monkeypatch.delenv("CHEXANATOMY_TEST_VAR", raising=False)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("size: 32\nenv:\n  CHEXANATOMY_TEST_VAR: 7\n")
    assert parse_config(UNetTrainConfig, ["--config", str(recipe)]).size == 32
    assert os.environ["CHEXANATOMY_TEST_VAR"] == "7"


def test_a_bad_value_is_a_usage_error_naming_the_flag(capsys):
    main, _ = entry("train-unet")
    assert_one_line_usage_error(main(["--size", "big"]), capsys.readouterr().err, "--size")


def test_run_main_turns_only_the_named_errors_into_usage_errors(capsys):
    def missing(argv):
        raise FileNotFoundError("no model folder at outputs/typo\n(see the docs)")

    assert run_main(missing, [], errors=(FileNotFoundError,)) == 2
    assert capsys.readouterr().err == "error: no model folder at outputs/typo (see the docs)\n"
    with pytest.raises(FileNotFoundError):
        run_main(missing, [])


def test_train_sft_pushes_the_output_folder_to_hub_model_id(tmp_path, monkeypatch, fake_hub):
    import train.sft as sft

    out = tmp_path / "vlm"

    def fake_build_trainer(args, config):
        class Trainer:
            args = config

            def train(self, resume_from_checkpoint=None):
                pass

        return Trainer(), None

    def fake_save(trainer, processor, args, config):
        out.mkdir()
        (out / "model.safetensors").write_bytes(b"weights")
        return out

    monkeypatch.setattr(sft, "build_trainer", fake_build_trainer)
    monkeypatch.setattr(sft, "save_outputs", fake_save)
    argv = ["--bf16", "false", "--model_name_or_path", "tiny", "--lora", "false", "--train_vision", "true",
            "--output_dir", str(out), "--push_to_hub", "true", "--hub_model_id", "me/tiny-vlm",
            "--hub_private_repo", "true"]  # fmt: skip
    assert sft.main(argv) == 0
    assert fake_hub == [("create_repo", "me/tiny-vlm", True),
                        ("upload_folder", "me/tiny-vlm", ["LICENSE", "model.safetensors"])]  # fmt: skip


def test_card_push_reaches_the_card_upload(tmp_path, monkeypatch, capsys):
    import model_card.__main__ as cli

    pushed = []
    card_path = tmp_path / "README.md"

    class Card:
        data = type("Data", (), {"eval_results": []})()

    monkeypatch.setattr(cli, "write_card", lambda *a: (card_path, Card(), {}))
    monkeypatch.setattr(cli, "push_card", lambda card, repo_id, plots: pushed.append(repo_id) or ["README.md"])
    argv = ["--output", str(card_path), "--push_to_hub", "true", "--hub_model_id", "me/unet"]
    assert cli.main(argv) == 0 and pushed == ["me/unet"]
    assert "pushed 1 files to me/unet" in capsys.readouterr().out
    assert cli.main(["--output", str(card_path), "--hub_model_id", "me/unet"]) == 0 and pushed == ["me/unet"]


def developer_tool(name: str):
    """``main`` of the repository's developer tools (not console scripts): the metric bundler, the Space examples."""
    if name == "metric_bundle":
        return importlib.import_module("eval.metric_bundle").main
    from test_space import load_module

    root = Path(__file__).resolve().parents[1]
    return load_module("chexanatomy_space_make_examples", root / "space" / "make_examples.py").main


@pytest.mark.parametrize("name", ["metric_bundle", "make_examples"])
def test_developer_tools_parse_the_same_way(name, tmp_path, capsys):
    main = developer_tool(name)
    assert main(["--help"]) == 0 and "--config FILE" in capsys.readouterr().out
    assert_one_line_usage_error(main(["--bogus"]), capsys.readouterr().err, "--bogus")


def test_make_examples_reports_a_missing_corpus_in_one_line(tmp_path, capsys):
    main = developer_tool("make_examples")
    assert_one_line_usage_error(main(["--corpus_dir", str(tmp_path / "nothing"), "--out_dir", str(tmp_path / "o")]),
                                capsys.readouterr().err)  # fmt: skip
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("name", ["train-unet", "train-codec"])
def test_a_corpus_that_is_not_there_is_one_line(name, tmp_path, capsys):
    main, prefix = entry(name)
    code = main([*prefix, "--corpus_dir", str(tmp_path / "no_corpus"), "--output_dir", str(tmp_path / "out")])
    assert_one_line_usage_error(code, capsys.readouterr().err, "no_corpus")


def test_abbreviated_flags_are_refused(capsys):
    """``--push`` was a flag of its own: it must not silently become ``--push_to_hub``; no abbreviations at all."""
    main, _ = entry("card")
    for flag in ("--hub_model", "--push"):
        assert_one_line_usage_error(main(["--output", "c.md", flag, "x"]), capsys.readouterr().err, flag)
