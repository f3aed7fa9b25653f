"""Uploading a finished output folder to the Hub: the one upload of every trainer (``--push_to_hub true``).

Trainers save everything a user needs into their ``--output_dir`` (weights, config, processor, ``mask_codec/``,
``training_config.json``, metrics, card); ``push_folder`` uploads that folder as it is, so the Hub repository is the
folder and ``from_pretrained(hub_model_id)`` loads what ``from_pretrained(output_dir)`` loads.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

# Resumable-training state and pickles a Hub model does not need.
NOT_UPLOADED = ("checkpoint-*", "checkpoint-*/**", "training_args.bin", "merged/**")


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

    Args:
        folder: the output folder of a training run.
        repo_id: ``owner/name`` (``--hub_model_id``).
        private: create the repository as private (``--hub_private_repo``); an existing one keeps its visibility.
        commit_message: the Hub commit's message.
        ignore_patterns: files of ``folder`` not uploaded (default: checkpoints, pickled arguments, ``merged/``).
        api: an ``HfApi`` (default a new one, with the login of ``hf auth login``).
    """
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    api.create_repo(repo_id, private=private, exist_ok=True)
    info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), ignore_patterns=list(ignore_patterns),
                             commit_message=commit_message)  # fmt: skip
    return str(info)
