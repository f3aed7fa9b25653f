"""Where a model named by a user is: a local folder, or a Hub repository, and never a mistyped path sent to the Hub.

The names every command line takes for a model and a device are resolved here, once:

* ``model_source``: ``"none"`` (no model of that kind), ``"bundled-vlm"``/``"bundled-unet"`` (the demonstration
  models in ``chexanatomy/assets/models``), or a folder / Hub id;
* ``resolve_device``: ``"auto"`` (or None) is ``cuda`` when available, else ``cpu``; other names pass through.

Every loader of models and codecs (``inference.load_segmenter``, ``codec.load_codec``, the Space's ``--vlm``/
``--unet``, the build's ``--codec``) resolves names here. The rule:

* an existing path is a local folder, and must hold the model's marker file (``config.json``, ...);
* only a string shaped ``owner/name`` that is not a local path may go to the Hub; it is a local path when a folder
  ``owner`` exists here (``outputs/unet-typo`` with an ``outputs/`` folder), unless that folder is a Python package
  (so ``chexanatomy/...`` Hub ids work from a checkout of this repository, which has a ``chexanatomy/`` package);
* anything else that does not exist is a ``FileNotFoundError`` naming the path; offline, or with the Hub
  unreachable, a Hub id that is not in the local cache is one too, saying so.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

NO_MODEL = "none"
BUNDLED_MODELS_DIR = Path(__file__).parent / "assets" / "models"
BUNDLED_MODELS = {"vlm": "tiny_vlm", "unet": "unet"}  # the embedded default's demonstration models
AUTO_DEVICE = "auto"

_HUB_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
HUB_ID = re.compile(f"{_HUB_PART}/{_HUB_PART}")


def hub_id(name: str) -> str | None:
    """``name`` if it may be fetched from the Hub (shaped ``owner/name``, not a local path; see above), else None."""
    if not HUB_ID.fullmatch(name) or ".." in name or "--" in name or Path(name).exists():
        return None
    owner = Path(name.split("/")[0])
    if owner.is_dir() and not (owner / "__init__.py").exists():
        return None
    return name


def locate_model(name_or_path: str | Path, markers: Sequence[str] = ("config.json",)) -> Path:
    """The folder of a model: a local folder holding one of ``markers``, or the snapshot of a Hub repository.

    Raises:
        FileNotFoundError: naming ``name_or_path``: a local folder without any of ``markers``, a path that does not
            exist and is not a Hub id, a Hub model that is not cached while offline or unreachable, or a Hub
            repository that does not exist (or is private).
    """
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not any((path / m).exists() for m in markers):
            raise FileNotFoundError(f"{path} has none of {', '.join(markers)}: not a model folder")
        return path
    repo = hub_id(str(name_or_path))
    if repo is None:
        raise FileNotFoundError(f"no model folder at {name_or_path} ({_why_not_hub(str(name_or_path))})")
    return _download(repo)


def _why_not_hub(name: str) -> str:
    """Why ``name`` (not a local path that exists) was not looked up on the Hub, for the error message."""
    if HUB_ID.fullmatch(name) and Path(name.split("/")[0]).is_dir():
        return f"not looked up on the Hub: {name.split('/')[0]}/ is a local folder"
    return "not a Hub id either: those look like owner/name"


def _download(repo: str) -> Path:
    """The local snapshot of the Hub model ``repo`` (from the cache when offline); ``FileNotFoundError`` if none."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(snapshot_download(repo))
    except LocalEntryNotFoundError:
        raise FileNotFoundError(
            f"no model folder at {repo}, and the Hub model {repo} is not cached here (offline, or the Hub is "
            "unreachable); download it once with network, or give a local folder"
        ) from None
    except RepositoryNotFoundError:
        raise FileNotFoundError(
            f"no model folder at {repo}, and no Hub model {repo} (or it is private: log in with `hf auth login`)"
        ) from None


def bundled_model_path(kind: str) -> Path:
    """Folder of the bundled demonstration model ``kind`` ("vlm" or "unet"), trained on the embedded corpus.

    Raises:
        ValueError: when ``kind`` is not one of ``BUNDLED_MODELS``.
        FileNotFoundError: when this installation does not carry it.
    """
    if kind not in BUNDLED_MODELS:
        raise ValueError(f"kind must be one of {sorted(BUNDLED_MODELS)}, got {kind!r}")
    path = BUNDLED_MODELS_DIR / BUNDLED_MODELS[kind]
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"the bundled {kind} model is missing from this installation: {path}")
    return path


def model_source(name: str | Path, kind: str | None = None) -> str | Path | None:
    """What a user's model name stands for: None for ``"none"``, the bundled folder, or ``name`` itself.

    Args:
        name: ``"none"`` (any case), ``"bundled-vlm"``/``"bundled-unet"``, a folder or a Hub id.
        kind: ``"vlm"`` or ``"unet"`` when the option takes one kind (``--vlm``): the other kind's bundled name is
            then an error.

    Raises:
        ValueError: for ``bundled-<x>`` that names no bundled model or the other kind.
        FileNotFoundError: when the bundled model is missing from this installation.
    """
    text = str(name)
    if text.lower() == NO_MODEL:
        return None
    if text.startswith("bundled-"):
        wanted = text.removeprefix("bundled-")
        if wanted not in BUNDLED_MODELS or (kind is not None and wanted != kind):
            choices = [f"bundled-{k}" for k in ((kind,) if kind else BUNDLED_MODELS)]
            raise ValueError(f"{text} is no bundled model here; bundled: {', '.join(choices)}")
        return bundled_model_path(wanted)
    return name


def resolve_device(name: str | None = AUTO_DEVICE) -> str:
    """The torch device of ``--device``: ``auto`` (or None) is ``cuda`` when available, else ``cpu``."""
    if name is None or name == AUTO_DEVICE:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return name
