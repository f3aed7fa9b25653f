"""Evaluate the VLM and the U-Net: per-structure scores, real-X-ray benchmarks and the paper's three studies.

    python -m eval                                                  # bundled models, embedded corpus, test split
    python -m eval --vlm outputs/tiny-vlm --unet outputs/unet --corpus_dir outputs/drr --output_dir outputs/eval
    python -m eval --studies domain_gap plausibility --real_dir /data/real_cxr_png    # default: 2 bundled real images
    python -m eval --jsrt /data/JSRT --scr /data/SCR --montgomery /data/MontgomerySet --shenzhen /data/ChinaSet \
                   --chexmask /data/chexmask/MIMIC-CXR-JPG.csv --chexmask_images /data/mimic-cxr-jpg

Writes ``results.json`` (the model card reads it), ``report.md`` (a per-structure table per model and dataset,
the studies' tables) and PNG plots into ``--output_dir``; prints each summary line and what it wrote.
"""

from __future__ import annotations

import copy
import os
import shlex
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

import datasets

from chexanatomy.answer_contract import LOC_DECODINGS
from chexanatomy.cli import MISSING_INPUT, parse_config, prog_name, run_main
from chexanatomy.inference import SEG_DECODINGS, ZoomEnsemble, load_segmenter
from chexanatomy.locate import SEGMENTER_MARKERS, locate_model, model_source

from . import report
from .corpus_eval import evaluate_on_corpus

STUDIES = ("robustness", "domain_gap", "few_shot", "plausibility")
# The robustness study and the gallery look at these (scoring every structure at every perturbation costs minutes).
KEY_STRUCTURES = (
    "lung_left",
    "lung_right",
    "heart",
    "trachea",
    "aorta",
    "clavicle_left",
    "clavicle_right",
    "liver",
    "stomach",
    "spleen",
    "thoracic_spine",
    "scapula_left",
    "scapula_right",
)


@dataclass
class EvalConfig:
    """Options of ``python -m eval``."""

    vlm: str = field(default="bundled-vlm", metadata={"help": "VLM folder, Hub id, 'bundled-vlm' or 'none'."})
    unet: str = field(default="bundled-unet", metadata={"help": "U-Net folder, Hub id, 'bundled-unet' or 'none'."})
    local_only: bool = field(
        default=False, metadata={"help": "--vlm and --unet are local folders: never look them up on the Hub."}
    )
    corpus_dir: str = field(default="outputs/drr", metadata={"help": "DRR corpus folder or Hub dataset id."})
    split: str = field(default="test", metadata={"help": "Corpus split to score."})
    output_dir: str = field(default="outputs/eval", metadata={"help": "Where results.json, report.md, plots go."})
    max_images: int | None = field(default=None, metadata={"help": "Score only the first N images of the split."})
    studies: list[str] = field(
        default_factory=lambda: ["robustness", "few_shot", "plausibility", "domain_gap"],
        metadata={"help": f"Of {STUDIES}."},
    )
    robustness_images: int = field(default=2, metadata={"help": "Images per perturbation in the robustness study."})
    robustness_kinds: list[str] = field(
        default_factory=lambda: ["rotate", "scale", "translate_x", "translate_y", "crop", "pad"],
        metadata={"help": "Perturbation kinds of the robustness sweep."},
    )
    robustness_structures: list[str] = field(
        default_factory=lambda: list(KEY_STRUCTURES), metadata={"help": "Structures scored in the robustness study."}
    )
    real_dir: str | None = field(
        default=None,
        metadata={"help": "Real radiographs for domain_gap and plausibility (default: the two bundled NIH images)."},
    )
    few_shot_k: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16], metadata={"help": "k examples."})
    few_shot_steps: int = field(default=40, metadata={"help": "Fine-tuning steps per few-shot run."})
    jsrt: str | None = field(default=None, metadata={"help": "JSRT folder (.IMG files); needs --scr."})
    scr: str | None = field(default=None, metadata={"help": "SCR masks folder (for JSRT)."})
    montgomery: str | None = field(default=None, metadata={"help": "Montgomery set folder."})
    shenzhen: str | None = field(default=None, metadata={"help": "Shenzhen set folder."})
    chexmask: str | None = field(default=None, metadata={"help": "CheXmask CSV; needs --chexmask_images."})
    chexmask_images: str | None = field(default=None, metadata={"help": "Images root for the CheXmask CSV."})
    real_max_images: int | None = field(default=None, metadata={"help": "Images per real dataset."})
    real_zooms: list[float] = field(
        default_factory=lambda: [1.0],
        metadata={"help": "Test-time zooms on the real sets, each in (0, 1] (chexanatomy.inference.ZoomEnsemble: the "
                  "masks of zoomed-out copies voted; 1 alone: off). Both models get the same."},
    )
    lung_definitions: list[str] = field(
        default_factory=lambda: ["scr", "heart"],
        metadata={"help": "How predicted lungs meet real references, one entry each: scr (lung fields), heart, full."},
    )
    keep_largest: bool = field(
        default=True, metadata={"help": "Real benchmarks: keep each predicted lung's largest connected component."}
    )
    device: str = field(default="auto", metadata={"help": "auto (cuda when available), cpu or cuda."})
    max_new_tokens: int = field(default=32, metadata={"help": "VLM answer length cap (one object: 4 + 16 + name)."})
    num_beams: int | None = field(
        default=None,
        metadata={"help": "VLM beam width (1: greedy); default what the model folder's generation_config.json says."},
    )
    loc_decoding: str = field(
        default="median",
        metadata={"help": "VLM <loc> choice under the contract: median of the model's distribution, or generate "
                  "(greedy/beam, as the other tokens)."},
    )
    seg_decoding: str = field(
        default="argmax",
        metadata={"help": "VLM mask from the 16 <seg> slots: argmax (the codes generated) or expected (the expected "
                  "code vectors under the model's distribution; chexanatomy.inference.SEG_DECODINGS)."},
    )
    vlm_unconstrained_check: bool = field(
        default=True,
        metadata={
            "help": "Also run the VLM unconstrained on the corpus split and the real sets, to report the invalid "
            "rate that constrained generation hides (invalid_rate_unconstrained); doubles VLM inference there."
        },
    )

    def __post_init__(self):
        unknown = [s for s in self.studies if s not in STUDIES]
        if unknown:
            raise ValueError(f"--studies: unknown {unknown}; choose from {STUDIES}")
        if self.num_beams is not None and self.num_beams < 1:
            raise ValueError(f"--num_beams must be at least 1, got {self.num_beams}")
        if self.loc_decoding not in LOC_DECODINGS:
            raise ValueError(f"--loc_decoding must be one of {LOC_DECODINGS}, got {self.loc_decoding!r}")
        if self.seg_decoding not in SEG_DECODINGS:
            raise ValueError(f"--seg_decoding must be one of {SEG_DECODINGS}, got {self.seg_decoding!r}")
        if self.seg_decoding == "expected" and (self.num_beams or 1) != 1:
            raise ValueError("--seg_decoding expected needs greedy decoding (--num_beams 1)")
        for kind in ("vlm", "unet"):
            model_source(getattr(self, kind), kind)  # a bundled name of the other kind is a usage error
        if self.vlm.lower() == "none" and self.unet.lower() == "none":
            raise ValueError("--vlm and --unet are both 'none': nothing to evaluate")
        if bool(self.jsrt) != bool(self.scr):
            raise ValueError("--jsrt and --scr go together (images and their masks)")
        if bool(self.chexmask) != bool(self.chexmask_images):
            raise ValueError("--chexmask and --chexmask_images go together")
        from .real_cxr import LUNG_DEFINITIONS

        if not self.real_zooms or not all(0 < z <= 1 for z in self.real_zooms):
            raise ValueError(f"--real_zooms: each zoom must be in (0, 1], got {self.real_zooms}")
        if bad := [d for d in self.lung_definitions if d not in LUNG_DEFINITIONS]:
            raise ValueError(f"--lung_definitions: unknown {bad}; choose from {tuple(LUNG_DEFINITIONS)}")


def load_models(config: EvalConfig) -> dict:
    """``{"vlm": Segmenter, "unet": Segmenter}`` for the models that are not 'none'."""
    sources = {"vlm": model_source(config.vlm, "vlm"), "unet": model_source(config.unet, "unet")}
    if config.local_only:  # resolved here, so the loader gets a folder that exists and looks nothing up
        sources = {k: src and locate_model(src, SEGMENTER_MARKERS, local_only=True) for k, src in sources.items()}
    options = {"vlm": {"max_new_tokens": config.max_new_tokens, "num_beams": config.num_beams,
                       "loc_decoding": config.loc_decoding, "seg_decoding": config.seg_decoding},
               "unet": {}}  # fmt: skip
    return {k: load_segmenter(src, device=config.device, **options[k]) for k, src in sources.items() if src}


def fresh_cache_dir() -> str:
    """A ``datasets`` cache folder of this process, under the system's temporary folder (never in an output folder).

    A fresh cache per run: a rebuilt local corpus must not be served from a stale cache. It is removed at exit.
    """
    return _process_cache().name


@lru_cache(maxsize=1)
def _process_cache() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="chexanatomy-eval-cache-")


def corpus_rows(config: EvalConfig):
    """The split's rows (a fresh cache per run: a rebuilt local corpus must not be served from a stale cache)."""
    rows = datasets.load_dataset(config.corpus_dir, cache_dir=fresh_cache_dir())[config.split]
    return rows.select(range(min(config.max_images, len(rows)))) if config.max_images else rows


def real_benchmarks(config: EvalConfig) -> dict[str, tuple[dict, object]]:
    """``{key: (dataset description, record iterator factory)}`` for the real datasets given on the command line."""
    from . import real_cxr

    n = config.real_max_images
    found = {}
    if config.jsrt:
        found["jsrt"] = (
            {"id": "jsrt-scr", "name": "JSRT + SCR", "split": "all"},
            lambda: real_cxr.load_jsrt_scr(config.jsrt, config.scr),
        )
    if config.montgomery:
        found["montgomery"] = (
            {"id": "montgomery", "name": "Montgomery", "split": "all"},
            lambda: real_cxr.load_montgomery(config.montgomery),
        )
    if config.shenzhen:
        found["shenzhen"] = (
            {"id": "shenzhen", "name": "Shenzhen", "split": "all"},
            lambda: real_cxr.load_shenzhen(config.shenzhen),
        )
    if config.chexmask:
        found["chexmask"] = (
            {"id": "chexmask", "name": "CheXmask", "split": "all"},
            lambda: real_cxr.load_chexmask(config.chexmask, config.chexmask_images),
        )
    return {k: (d, _take(f, n)) for k, (d, f) in found.items()}


def _take(factory, n: int | None):
    import itertools

    return lambda: itertools.islice(factory(), n) if n else factory()


def run(config: EvalConfig, argv: list[str] | None = None) -> dict:
    """The whole evaluation; returns the results dict it wrote."""
    start = time.perf_counter()
    models = load_models(config)  # first: a missing model is a usage error that writes nothing
    out = Path(config.output_dir)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    rows = corpus_rows(config)
    dataset = {
        "id": "chexanatomy/drr",
        "name": f"CheXanatomy DRR ({Path(config.corpus_dir).name})",
        "config": "default",
        "split": config.split,
        "source": config.corpus_dir,
        "images": len(rows),
        "synthetic": True,
        "lung_definition": "full",
    }
    evaluations, galleries = [], {}
    for key, segmenter in models.items():
        evaluation, galleries[key] = evaluate_on_corpus(segmenter, rows, key, dataset)
        if config.vlm_unconstrained_check:
            add_unconstrained(evaluation, segmenter, lambda s, m: evaluate_on_corpus(s, rows, m, dataset, 0)[0])
        evaluations.append(evaluation)
        print(report.headline(evaluation))
    evaluations += score_real(models, config)
    plots = {"per_structure": "plots/per_structure_dice.png", "gallery": "plots/gallery.png"}
    report.plot_per_structure([e for e in evaluations if e["dataset"] is dataset], out / plots["per_structure"])
    report.plot_gallery(galleries, out / plots["gallery"], structures=KEY_STRUCTURES)
    studies, tables = run_studies(config, models, rows, out, plots)
    results = {
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": "python -m eval " + shlex.join(argv or []),
        "config": asdict(config),
        "models": [
            {"id": k, "kind": s.kind, "source": getattr(config, k), "parameters": _parameters(s),
             **({"num_beams": s.beams, "loc_decoding": s.loc_decoding, "seg_decoding": s.seg_decoding}
                if s.kind == "vlm" else {})}  # fmt: skip
            for k, s in models.items()
        ],
        "evaluations": evaluations,
        "studies": studies,
        "plots": plots,
    }
    path = report.write_results(results, out)
    md = report.write_markdown(results, tables, out)
    print(f"wrote {path}, {md} and {len(plots)} plots in {out}/plots ({time.perf_counter() - start:.0f} s)")
    return results


def _parameters(segmenter) -> int:
    return int(sum(p.numel() for p in segmenter.model.parameters()))


def score_real(models: dict, config: EvalConfig) -> list[dict]:
    """Evaluation entries on each real dataset given on the command line, for every model.

    With ``--real_zooms`` other than ``1`` alone, every model is scored through a ``ZoomEnsemble`` of those zooms
    (recorded as the entry's ``dataset.zooms``); the VLM's unconstrained check runs on the model alone.
    """
    from .real_eval import evaluate_on_real

    entries, voted = [], config.real_zooms != [1.0]
    for _, (description, records) in real_benchmarks(config).items():
        if voted:
            description = {**description, "zooms": list(config.real_zooms)}
        for key, segmenter in models.items():
            scored = ZoomEnsemble(segmenter, config.real_zooms) if voted else segmenter
            for lungs in config.lung_definitions:
                args = (description, lungs, config.keep_largest)
                entries.append(evaluate_on_real(scored, records(), key, *args))
                if config.vlm_unconstrained_check:
                    add_unconstrained(
                        entries[-1], segmenter, lambda s, m, a=args, r=records: evaluate_on_real(s, r(), m, *a)
                    )
                print(report.headline(entries[-1]))
    return entries


def add_unconstrained(evaluation: dict, segmenter, evaluate) -> dict:
    """Add ``summary.invalid_rate_unconstrained`` (and ``x0_eq_y0_rate_unconstrained``) to a VLM's entry.

    A U-Net's entry is left as it is.

    Constrained generation (the default of ``VLMSegmenter``) makes every answer valid, so ``invalid_rate`` is 0 by
    design; this reruns ``evaluate(segmenter, model_id)`` with the same model and ``constrained=False`` (its
    progress bar says "<model> unconstrained") to measure how often the model's own answers break the contract.
    The rerun's time per image is ``seconds_per_image_unconstrained`` (the check doubles VLM inference). A segmenter
    that is already unconstrained is not run twice.
    """
    if getattr(segmenter, "kind", None) != "vlm":
        return evaluation
    if not getattr(segmenter, "constrained", False):
        evaluation["summary"]["invalid_rate_unconstrained"] = evaluation["summary"]["invalid_rate"]
        return evaluation
    unconstrained = copy.copy(segmenter)  # shares model, processor and tokenizer
    unconstrained.constrained = False  # its masks come from the codes generated (seg_decoding needs the contract)
    rerun = evaluate(unconstrained, f"{evaluation['model']} unconstrained")
    evaluation["summary"]["invalid_rate_unconstrained"] = rerun["summary"]["invalid_rate"]
    evaluation["summary"]["x0_eq_y0_rate_unconstrained"] = rerun["summary"].get("x0_eq_y0_rate")
    evaluation["seconds_per_image_unconstrained"] = rerun["seconds_per_image"]
    return evaluation


def run_studies(config: EvalConfig, models: dict, rows, out: Path, plots: dict) -> tuple[dict, dict]:
    """The requested studies: results for the JSON, Markdown tables; plot paths are added to ``plots``."""
    studies, tables = {}, {}
    if "robustness" in config.studies:
        from .perturb import DEFAULT_SWEEP
        from .robustness import plot_robustness, robustness_study, robustness_table

        sweep = [p for p in DEFAULT_SWEEP if p.kind in config.robustness_kinds]
        known = [n for n in config.robustness_structures if all(n in m.structures for m in models.values())]
        studies["robustness"] = robustness_study(
            models, rows, structures=known, sweep=sweep, max_images=config.robustness_images
        )
        plots["robustness"] = str(
            plot_robustness(studies["robustness"], out / "plots" / "robustness.png").relative_to(out)
        )
        tables["robustness"] = robustness_table(studies["robustness"])
    if "domain_gap" in config.studies:
        _domain_gap(config, out, plots, studies, tables)
    if "few_shot" in config.studies:
        _few_shot(config, models, out, plots, studies, tables)
    if "plausibility" in config.studies:
        from .plausibility import plausibility_study, plausibility_table

        studies["plausibility"] = plausibility_study(models, real_images(config, max_images=20))
        tables["plausibility"] = plausibility_table(studies["plausibility"])
    return studies, tables


def real_images(config: EvalConfig, max_images: int = 200) -> dict:
    """``--real_dir``'s radiographs (name -> PIL), or the two bundled real radiographs when it is not given."""
    from chexanatomy.examples import real_radiographs

    from .domain_gap import load_image_folder

    return load_image_folder(config.real_dir, max_images=max_images) if config.real_dir else real_radiographs()


def _domain_gap(config: EvalConfig, out: Path, plots: dict, studies: dict, tables: dict) -> None:
    from .domain_gap import corpus_images, domain_gap_study, domain_gap_table, plot_domain_gap

    # Appearance, not a model score: every split's frontal views (the real benchmarks are frontal), so that a small
    # test split does not make the standardised differences noise.
    every = datasets.load_dataset(config.corpus_dir, cache_dir=fresh_cache_dir())
    columns = ["image", "subject_id", "view", "pose_index"]  # no mask decoding
    drr = {k: v for split in every.values() for k, v in corpus_images(split.select_columns(columns)).items()}
    studies["domain_gap"] = domain_gap_study(drr, real_images(config))
    plots["domain_gap"] = str(plot_domain_gap(studies["domain_gap"], out / "plots" / "domain_gap.png").relative_to(out))
    tables["domain_gap"] = domain_gap_table(studies["domain_gap"])


def _few_shot(config: EvalConfig, models: dict, out: Path, plots: dict, studies: dict, tables: dict) -> None:
    from .few_shot import FewShotConfig, few_shot_study, few_shot_table, plot_few_shot

    if "vlm" not in models:
        print("few_shot skipped: it fine-tunes the VLM (--vlm is 'none')")
        return
    splits = datasets.load_dataset(config.corpus_dir, cache_dir=fresh_cache_dir())
    settings = FewShotConfig(ks=tuple(config.few_shot_k), steps=config.few_shot_steps)
    studies["few_shot"] = few_shot_study(models["vlm"], splits["train"], splits[config.split], settings)
    plots["few_shot"] = str(plot_few_shot(studies["few_shot"], out / "plots" / "few_shot.png").relative_to(out))
    tables["few_shot"] = few_shot_table(studies["few_shot"])


def main(argv: list[str] | None = None) -> int:
    """``python -m eval`` / ``chexanatomy-eval``: 0 when evaluated, 2 on a usage error (one line: a flag, a path)."""
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    return run_main(_main, argv, errors=MISSING_INPUT)


def _main(argv: list[str]) -> int:
    run(parse_config(EvalConfig, argv, prog_name("eval"), __doc__), argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
