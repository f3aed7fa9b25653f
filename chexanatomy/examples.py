"""The two real chest radiographs bundled with the package (``chexanatomy/assets/real_cxr``, NIH ChestX-ray14).

Frontal views in radiological convention (the patient's right on the image left), 512 x 512, 8-bit grey, no
reference masks (their source note is ``assets/real_cxr/README.md``). The dataset card's side-by-side figure, the
Space's first examples, the plausibility study (``eval.plausibility``) and the domain-gap study's default real set
all read them through this module.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from PIL import Image

from .masks import as_grey

REAL_RADIOGRAPHS = ("00000001_000.png", "00027426_000.png")


def real_radiograph_path(name: str) -> Path:
    """The path of the PNG file ``name`` (one of ``REAL_RADIOGRAPHS``) in the package (a file for Gradio examples)."""
    if name not in REAL_RADIOGRAPHS:
        raise KeyError(f"no bundled radiograph {name!r}; there are {REAL_RADIOGRAPHS}")
    return Path(str(importlib.resources.files("chexanatomy") / "assets" / "real_cxr" / name))


def real_radiograph_bytes(name: str) -> bytes:
    """The PNG file ``name`` (one of ``REAL_RADIOGRAPHS``) as stored."""
    return real_radiograph_path(name).read_bytes()


def real_radiographs() -> dict[str, Image.Image]:
    """Every bundled real radiograph: file stem -> grey (mode "L") PIL image, fully decoded."""
    import io

    out = {}
    for name in REAL_RADIOGRAPHS:
        image = Image.open(io.BytesIO(real_radiograph_bytes(name)))
        out[name.rsplit(".", 1)[0]] = Image.fromarray(as_grey(image))
    return out


__all__ = ["REAL_RADIOGRAPHS", "real_radiograph_bytes", "real_radiograph_path", "real_radiographs"]
