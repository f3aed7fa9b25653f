"""Publishing a corpus folder to the Hugging Face Hub (tagged with the corpus format version)."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import HfApi

from .corpus import FORMAT_VERSION

UPLOAD_PATTERNS = ["README.md", "build_config.json", "example.png", "data/*.parquet"]  # failures*.jsonl stay local


def files_to_upload(root: Path) -> list[str]:
    """Relative paths that ``push_corpus`` uploads (the card, config, example and finished shards)."""
    root = Path(root)
    out = [p for p in UPLOAD_PATTERNS[:3] if (root / p).exists()]
    return out + sorted(f"data/{p.name}" for p in (root / "data").glob("*.parquet"))


def push_corpus(root: Path, repo_id: str, private: bool = False, api: HfApi | None = None) -> str:
    """Upload the corpus so that ``load_dataset(repo_id)`` works; returns the commit URL."""
    api = api or HfApi()
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    info = api.upload_folder(
        repo_id=repo_id,
        repo_type="dataset",
        folder_path=str(root),
        allow_patterns=UPLOAD_PATTERNS,
        commit_message=f"CheXanatomy DRR corpus, format {FORMAT_VERSION}",
    )
    api.create_tag(repo_id, tag=f"v{FORMAT_VERSION}", repo_type="dataset", exist_ok=True)
    return str(info)
