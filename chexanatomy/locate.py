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
  (so ``chexanatomy/...`` Hub ids work from a checkout of this repository, which has a ``chexanatomy/`` package),
  and when ``owner`` is a name of the working directory's shape (``outputs``, ``models``, ``checkpoints``, ...:
  ``LOCAL_FOLDER_NAMES``), whether or not that folder exists here; ``./``, ``../``, ``~`` and absolute paths never
  look like ``owner/name``;
* ``hf://owner/name`` is an explicit Hub id, looked up whatever folders exist here (the way to reach a Hub user
  named ``outputs``);
* with ``local_only`` nothing is looked up on the Hub, whatever the name;
* anything else that does not exist is a ``FileNotFoundError`` naming the path and saying whether it was taken for a
  local path or a Hub id; offline, or with the Hub unreachable, a Hub id that is not in the local cache is one too.
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
EXPLICIT_HUB = "hf://"
# First folders of paths that training and evaluation write (ours and the usual ones of HF scripts): a name starting
# with one is a local path even where that folder does not exist (run from another folder, or a typo).
LOCAL_FOLDER_NAMES = frozenset(
    {"outputs", "output", "out", "models", "model", "checkpoints", "checkpoint", "ckpt", "runs", "results", "data",
     "tmp", "weights", "experiments", "saved_models"}
)  # fmt: skip
SEGMENTER_MARKERS = ("config.json", "adapter_config.json")  # a model folder or a LoRA adapter (inference.py's)


def hub_id(name: str) -> str | None:
    """``name`` if it may be fetched from the Hub (shaped ``owner/name``, not a local path; see above), else None."""
    if name.startswith(EXPLICIT_HUB):
        name = name.removeprefix(EXPLICIT_HUB)
        return name if HUB_ID.fullmatch(name) else None
    if not HUB_ID.fullmatch(name) or ".." in name or "--" in name or Path(name).exists():
        return None
    owner = name.split("/")[0]
    if owner.lower() in LOCAL_FOLDER_NAMES:
        return None
    if Path(owner).is_dir() and not (Path(owner) / "__init__.py").exists():
        return None
    return name


def locate_model(
    name_or_path: str | Path, markers: Sequence[str] = ("config.json",), local_only: bool = False
) -> Path:
    """The folder of a model: a local folder holding one of ``markers``, or the snapshot of a Hub repository.

    Args:
        name_or_path: a folder, ``owner/name`` or ``hf://owner/name`` (see the module docstring).
        markers: file names of which a model folder holds at least one.
        local_only: never look anything up on the Hub (``--local_only``).

    Raises:
        FileNotFoundError: naming ``name_or_path``: a local folder without any of ``markers``, a path that does not
            exist and is not a Hub id (or any missing name with ``local_only``), a Hub model that is not cached while
            offline or unreachable, or a Hub repository that does not exist (or is private).
    """
    text = str(name_or_path)
    path = Path(name_or_path).expanduser()
    if not text.startswith(EXPLICIT_HUB) and path.exists():
        if not any((path / m).exists() for m in markers):
            raise FileNotFoundError(f"{path} has none of {', '.join(markers)}: not a model folder")
        return path
    repo = None if local_only else hub_id(text)
    if repo is None:
        raise FileNotFoundError(f"no model folder at {text} ({_why_not_hub(text, local_only)})")
    return _download(repo)


def _why_not_hub(name: str, local_only: bool = False) -> str:
    """Why ``name`` (not a local path that exists) was not looked up on the Hub, for the error message."""
    if local_only:
        return "taken as a local path: nothing is looked up on the Hub with --local_only"
    if name.startswith(EXPLICIT_HUB):
        return f"{name.removeprefix(EXPLICIT_HUB)} is not a Hub id: those look like owner/name"
    if not HUB_ID.fullmatch(name):
        return "not a Hub id either: those look like owner/name"
    owner = name.split("/")[0]
    why = f"{owner}/ is a local folder" if Path(owner).is_dir() else f"{owner}/ names a local folder of outputs"
    return f"taken as a local path, not looked up on the Hub: {why}; for the Hub model, write {EXPLICIT_HUB}{name}"


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
