"""The examples shipped beside the app (``examples/``, written by ``make_examples.py``) and their ground truth.

An upload is matched to an example by its bytes (Gradio serves examples from temporary copies), so an example
gets Dice columns however it reaches the app.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from chexanatomy.examples import REAL_RADIOGRAPHS, real_radiograph_path

HERE = Path(__file__).resolve().parent
EXAMPLES_DIR = HERE / "examples"


@dataclass(frozen=True)
class Example:
    """A bundled example: ``image`` (PNG) with ground-truth masks in ``masks`` (npz, see make_examples.py).

    ``masks`` is None for a real radiograph, which has no ground truth.
    """

    image: Path
    masks: Path | None
    label: str


def load_examples(examples_dir: Path | None) -> list[Example]:
    """The examples in ``examples_dir``, in examples.json order when present.

    Every ``NAME.png`` with a ``NAME.npz`` (rendered, with ground truth), and every PNG that examples.json lists with
    ``"masks": null`` (a real radiograph): ``real_NAME.png`` of the folder, else the core's ``NAME.png``
    (``chexanatomy.examples``; the wheel stores those once, there).
    """
    if examples_dir is None or not Path(examples_dir).is_dir():
        return []
    examples_dir = Path(examples_dir)
    meta_file = examples_dir / "examples.json"
    meta = json.loads(meta_file.read_text(encoding="utf-8"))["examples"] if meta_file.exists() else []
    labels = {m["image"]: _example_label(m) for m in meta}
    real = {m["image"] for m in meta if m.get("masks") is None}
    order = {m["image"]: i for i, m in enumerate(meta)}
    files = {p.name: p for p in examples_dir.glob("*.png")}
    for name in sorted(real - set(files)):  # an installed wheel stores the real radiographs once, in the core
        if name.removeprefix("real_") in REAL_RADIOGRAPHS:
            files[name] = real_radiograph_path(name.removeprefix("real_"))
    names = sorted(files, key=lambda n: (order.get(n, len(order)), n))
    return [
        Example(files[n], None if n in real else files[n].with_suffix(".npz"), labels.get(n, Path(n).stem))
        for n in names
        if n in real or files[n].with_suffix(".npz").exists()
    ]


def _example_label(entry: dict) -> str:
    if entry.get("masks") is None:
        return f"real radiograph ({entry['subject_id']}), no ground truth"
    return f"{entry['view']} view, held-out subject {entry['subject_id']}, pose {entry['pose_index']}"


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (Gradio copies examples to temporary paths; the content stays the same)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_ground_truth(masks_file: Path, size: tuple[int, int]) -> dict[str, np.ndarray]:
    """Ground-truth masks, name -> bool [H, W] at ``size`` = (W, H) (nearest-resized when the image was resized)."""
    with np.load(masks_file) as data:
        names, (height, width) = [str(n) for n in data["names"]], data["shape"]
        masks = np.unpackbits(data["masks"], axis=1, count=height * width).reshape(len(names), height, width)
    if (width, height) != tuple(size):
        return {
            n: np.asarray(Image.fromarray(m * 255).resize(size, Image.Resampling.NEAREST)) > 0
            for n, m in zip(names, masks, strict=True)
        }
    return {n: m.astype(bool) for n, m in zip(names, masks, strict=True)}
