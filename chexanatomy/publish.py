"""Uploading a finished output folder to the Hub: the one upload of every trainer (``--push_to_hub true``).

Trainers save everything a user needs into their ``--output_dir`` (weights, config, processor, ``mask_codec/``,
``training_config.json``, metrics, card); ``push_folder`` uploads that folder as it is, so the Hub repository is the
folder and ``from_pretrained(hub_model_id)`` loads what ``from_pretrained(output_dir)`` loads. Before uploading it
adds what every published folder carries (``chexanatomy.model_bundle``: the ``LICENSE``; for a VLM, the standalone
``<seg>`` decoder and answer contract).

``license_text`` is the one source of the project's licence for every folder that is pushed (models, the metric,
the Space): the repository's ``LICENSE``, or in an installation the copy in the distribution's metadata.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Sequence
from pathlib import Path

LICENSE = Path(__file__).resolve().parents[1] / "LICENSE"  # the checkout's; pyproject.toml's license-files

# Resumable-training state and pickles a Hub model does not need.
NOT_UPLOADED = ("checkpoint-*", "checkpoint-*/**", "training_args.bin", "merged/**")


def license_text() -> str:
    """The project's licence (Apache-2.0), full text: ``LICENSE`` of the checkout, else of the installed wheel.

    Raises:
        FileNotFoundError: when neither is there (a source tree without its LICENSE).
    """
    if LICENSE.is_file():
        return LICENSE.read_text(encoding="utf-8")
    try:  # PEP 639: an installation keeps it in its metadata, under licenses/
        text = importlib.metadata.distribution("chexanatomy").read_text("licenses/LICENSE")
    except importlib.metadata.PackageNotFoundError:
        text = None
    if text is None:
        raise FileNotFoundError(f"no LICENSE: not at {LICENSE} and not in the installed chexanatomy's metadata")
    return text


def push_folder(
    folder: Path | str,
    repo_id: str,
    *,
    private: bool = False,
    commit_message: str = "CheXanatomy",
    ignore_patterns: Sequence[str] = NOT_UPLOADED,
    api=None,
) -> str:
    """Create the model repository ``repo_id`` if needed and upload ``folder`` into it; returns the commit's URL.

    The folder's published extras (``LICENSE``, the VLM's standalone decoder: ``chexanatomy.model_bundle``) are written
    into it first, so the repository and the folder stay the same.

    Args:
        folder: the output folder of a training run.
        repo_id: ``owner/name`` (``--hub_model_id``).
        private: create the repository as private (``--hub_private_repo``); an existing one keeps its visibility.
        commit_message: the Hub commit's message.
        ignore_patterns: files of ``folder`` not uploaded (default: checkpoints, pickled arguments, ``merged/``).
        api: an ``HfApi`` (default a new one, with the login of ``hf auth login``).
    """
    from .model_bundle import write_bundle

    write_bundle(Path(folder))
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    api.create_repo(repo_id, private=private, exist_ok=True)
    info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), ignore_patterns=list(ignore_patterns),
                             commit_message=commit_message)  # fmt: skip
    return str(info)
