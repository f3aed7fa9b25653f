"""Publishing a corpus folder to the Hugging Face Hub (tagged with the corpus format version).

Two ways, both ``huggingface_hub``: ``push_corpus`` uploads a finished folder in one commit; ``publishing`` (the
build's ``--push_to_hub``) commits the finished shards every ``PUSH_EVERY_MINUTES`` while the build runs
(``CommitScheduler``), then the build pushes the card with ``push_corpus(..., shards=False)``. Publishing resumes: a
shard the repo already holds is never uploaded again.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from huggingface_hub import CommitScheduler, HfApi
from huggingface_hub.utils import filter_repo_objects

from .corpus import FORMAT_VERSION

# What the Hub dataset of a corpus carries: the card and its example image, the shards, and build_config.json (the
# resolved build options: the corpus's provenance and the way to rebuild it). What stays in the local folder: the
# build's locks (.build.lock, .build_config.lock), failures*.jsonl (the skipped subjects' reasons can name the
# builder's local paths; the card states their count) and anything else a user left there.
CARD_FILES = ["README.md", "build_config.json", "example.png"]
UPLOAD_PATTERNS = [*CARD_FILES, "data/*.parquet"]
NOT_UPLOADED = [".*", "*/.*", "failures*.jsonl"]  # named as well: never pushed, should a pattern above widen
PUSH_EVERY_MINUTES = 5.0


def files_to_upload(root: Path, shards: bool = True) -> list[str]:
    """Relative paths that ``push_corpus`` uploads: the card files, then the finished shards (``shards=True``).

    Selected as ``upload_folder`` selects them (``huggingface_hub``'s filter, the same patterns).
    """
    root = Path(root)
    local = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    sent = set(filter_repo_objects(local, allow_patterns=UPLOAD_PATTERNS if shards else CARD_FILES,
                                   ignore_patterns=NOT_UPLOADED))  # fmt: skip
    return [f for f in CARD_FILES if f in sent] + sorted(sent - set(CARD_FILES))


def push_corpus(root: Path, repo_id: str, private: bool = False, api: HfApi | None = None, shards: bool = True) -> str:
    """Upload the corpus so that ``load_dataset(repo_id)`` works; returns the commit URL.

    ``shards=False`` uploads the card, config and example only (the shards went up while building).
    """
    api = api or HfApi()
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    info = api.upload_folder(
        repo_id=repo_id,
        repo_type="dataset",
        folder_path=str(root),
        allow_patterns=UPLOAD_PATTERNS if shards else CARD_FILES,
        ignore_patterns=NOT_UPLOADED,
        commit_message=f"CheXanatomy DRR corpus, format {FORMAT_VERSION}",
    )
    api.create_tag(repo_id, tag=f"v{FORMAT_VERSION}", repo_type="dataset", exist_ok=True)
    return str(info)


class _ShardScheduler(CommitScheduler):
    """A ``CommitScheduler`` of ``data/*.parquet`` that takes the shards the repo already holds as uploaded."""

    def __init__(self, *, present: set[str], **kwargs):
        self._present = present  # paths in the repo when the build started
        super().__init__(**kwargs)

    def push_to_hub(self):
        """Mark the shards the repo already had as uploaded, then commit the new ones (``CommitScheduler``'s)."""
        with self.lock:
            for path in (self.folder_path / "data").glob("*.parquet"):
                if f"data/{path.name}" in self._present:
                    self.last_uploaded.setdefault(path, path.stat().st_mtime)
        return super().push_to_hub()


@contextlib.contextmanager
def publishing(root: Path, repo_id: str, private: bool = False, api: HfApi | None = None):
    """While in this context, commit the finished shards of ``root/data`` to the Hub dataset ``repo_id``.

    Commits run every ``PUSH_EVERY_MINUTES`` in a background thread and once more on leaving, so every shard finished
    in the context is in the repo afterwards. Shards already in the repo (a resumed build) are skipped.
    """
    api = api or HfApi()
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    present = set(api.list_repo_files(repo_id, repo_type="dataset"))
    scheduler = _ShardScheduler(
        present=present, repo_id=repo_id, repo_type="dataset", folder_path=root, every=PUSH_EVERY_MINUTES,
        private=private, allow_patterns=["data/*.parquet"], ignore_patterns=NOT_UPLOADED, hf_api=api,
    )  # fmt: skip
    try:
        yield scheduler
    finally:
        scheduler.trigger().result()
        scheduler.stop()
