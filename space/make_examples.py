"""Export a few held-out corpus images as the Space's examples, with their ground-truth masks.

    python space/make_examples.py --corpus_dir outputs/drr            # 3 test-split images -> space/examples/

Also copies the two bundled real radiographs (``chexanatomy/assets/real_cxr``, NIH ChestX-ray14) as examples without
ground truth (``"masks": null``), so that a visitor sees the models on a real image first.

For each chosen row it writes ``NAME.png`` (the radiograph, 8-bit grey, as in the corpus) and ``NAME.npz``
(``names`` str [N], ``shape`` int64 [2] = (H, W), ``masks`` uint8 [N, ceil(H*W/8)] = ``np.packbits`` of the
bool [N, H, W] masks flattened per structure, compressed), plus ``examples.json`` describing them. Views are
taken in turn (PA, LAT, PA, ...), so the default 3 are 2 PA + 1 lateral. The app matches an upload to its
ground truth by the PNG's SHA-256, so the PNGs must be committed byte for byte as written here.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path

import numpy as np

from chexanatomy.cli import parse_config, run_main

HERE = Path(__file__).resolve().parent


def interleave_views(rows: list[dict], views: list[str]) -> list[dict]:
    """Rows reordered so that the views take turns (``views`` order first), each view keeping corpus order."""
    by_view = [[r for r in rows if r["view"] == v] for v in views]
    return [r for group in zip_longest(*by_view) for r in group if r is not None]


def example_name(row: dict) -> str:
    """A file stem such as ``pa_embedded-ps008_pose0``; the subject id as the corpus's shard names write it."""
    from chexanatomy.subjects import safe_name  # never a raw id in a path: "../x" or "a/b" stay in out_dir

    return f"{row['view'].lower()}_{safe_name(row['subject_id'])}_pose{row['pose_index']}"


def pack_masks(structures: list[dict]) -> dict[str, np.ndarray]:
    """The npz arrays (``names``, ``shape``, ``masks``) for a row's structures (masks PIL "1", all one size)."""
    masks = np.stack([np.asarray(s["mask"], dtype=bool) for s in structures])
    count, height, width = masks.shape
    return {
        "names": np.array([s["name"] for s in structures]),
        "shape": np.array([height, width], dtype=np.int64),
        "masks": np.packbits(masks.reshape(count, -1), axis=1),
    }


def write_example(row: dict, out_dir: Path) -> dict:
    """Write one row's PNG + npz; return its ``examples.json`` entry."""
    name = example_name(row)
    png = out_dir / f"{name}.png"
    row["image"].convert("L").save(png, optimize=True)
    np.savez_compressed(out_dir / f"{name}.npz", **pack_masks(row["structures"]))
    return {
        "image": png.name,
        "masks": f"{name}.npz",
        "sha256": hashlib.sha256(png.read_bytes()).hexdigest(),
        "view": row["view"],
        "subject_id": row["subject_id"],
        "source": row["source"],
        "pose_index": row["pose_index"],
        "size": list(row["image"].size),
        "structures": len(row["structures"]),
    }


def write_real_example(name: str, out_dir: Path) -> dict:
    """Copy one bundled real radiograph into ``out_dir`` as ``real_NAME``; return its ``examples.json`` entry."""
    from chexanatomy.examples import real_radiograph_bytes

    data = real_radiograph_bytes(name)
    png = out_dir / f"real_{name}"
    png.write_bytes(data)
    return {
        "image": png.name,
        "masks": None,
        "sha256": hashlib.sha256(data).hexdigest(),
        "view": "PA",
        "subject_id": f"NIH ChestX-ray14 {Path(name).stem}",
        "source": "real",
        "pose_index": None,
        "size": [512, 512],
        "structures": 0,
    }


@dataclass
class ExamplesConfig:
    """Options of ``python space/make_examples.py``."""

    corpus_dir: str = field(default="outputs/drr", metadata={"help": "A built corpus (Parquet + README)."})
    out_dir: str = field(default=str(HERE / "examples"), metadata={"help": "Where the examples go."})
    n: int = field(default=3, metadata={"help": "How many corpus images."})
    split: str = field(default="test", metadata={"help": "Corpus split (test = held-out pseudo-subjects)."})
    views: list[str] = field(default_factory=lambda: ["PA", "LAT"], metadata={"help": "Views, taken in turn."})
    cache_dir: str | None = field(default=None, metadata={"help": "datasets cache folder."})


def export(args: ExamplesConfig) -> None:
    """Export the real radiographs and ``args.n`` corpus examples; print a one-line summary.

    Raises:
        ValueError: when the split has fewer than ``args.n`` rows with the views asked for.
    """
    import datasets

    start = time.perf_counter()
    rows = list(datasets.load_dataset(args.corpus_dir, split=args.split, cache_dir=args.cache_dir))
    chosen = interleave_views(rows, args.views)[: args.n]
    if len(chosen) < args.n:
        raise ValueError(f"--n {args.n}: the {args.split} split has only {len(chosen)} rows with views {args.views}")
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    from chexanatomy.examples import REAL_RADIOGRAPHS

    entries = [write_real_example(name, out_dir) for name in REAL_RADIOGRAPHS]
    entries += [write_example(row, out_dir) for row in chosen]
    meta = {"corpus_dir": str(args.corpus_dir), "split": args.split, "examples": entries}
    (out_dir / "examples.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    size = sum(p.stat().st_size for p in out_dir.iterdir() if p.is_file())
    print(f"wrote {len(entries)} examples ({size / 1e6:.2f} MB) to {out_dir} in {time.perf_counter() - start:.1f} s")


def main(argv: list[str] | None = None) -> int:
    """``python space/make_examples.py``: 0 when written, 2 on a usage error (one line)."""
    return run_main(_main, argv, errors=(FileNotFoundError, ValueError))


def _main(argv: list[str]) -> int:
    export(parse_config(ExamplesConfig, argv, "python space/make_examples.py", __doc__))
    return 0


if __name__ == "__main__":
    sys.exit(main())
