"""Build a corpus: subjects -> rendered views -> one Parquet shard per subject -> dataset card.

    python -m dataset_builder build --source embedded --output_dir outputs/drr
    python -m dataset_builder build --source phantom --size_px 128 --num_subjects 4 --output_dir /tmp/drr
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import torch
from tqdm.auto import tqdm

from chexanatomy.codec import codec_fingerprint, default_tokenizer, load_codec
from chexanatomy.mask_tokens import MaskTokenizer

from .card import write_card
from .corpus import shard_path, split_of, to_row, write_shard
from .ct import CTVolume, load_embedded
from .deform import deform
from .geometry import VIEWS
from .phantom import make_thorax_phantom
from .render import RenderSettings, render_subject, stable_seed

SOURCES = ("embedded", "phantom")
# Fields that do not change the content of the shards; a resumed build may change them.
_NON_CONTENT = {"output_dir", "push_to_hub", "private", "device"}


@dataclass
class BuildConfig:
    """Configuration of ``python -m dataset_builder build`` (every field is a ``--flag``)."""

    source: str = field(default="embedded", metadata={"help": f"Where the CTs come from: one of {SOURCES}."})
    output_dir: str = field(default="outputs/drr", metadata={"help": "Corpus folder (created; resumable)."})
    num_subjects: int = field(default=10, metadata={"help": "Pseudo-subjects (deformed copies) to make."})
    deformation_strength: float = field(default=1.0, metadata={"help": "Scale of the pseudo-subject warps; 0 = none."})
    views: list[str] = field(default_factory=lambda: ["PA", "LAT"], metadata={"help": f"Views among {VIEWS}."})
    poses_per_view: int = field(default=3, metadata={"help": "Poses per view; pose 0 is the standard position."})
    size_px: int = field(default=512, metadata={"help": "Image height = width in pixels (224-1024; 32+ for tests)."})
    mask_threshold_mm: float = field(default=1.5, metadata={"help": "Path length (mm) a ray needs to be in a mask."})
    min_area_px: int = field(default=8, metadata={"help": "Omit structures smaller than this in a view."})
    randomize: bool = field(default=True, metadata={"help": "Random poses (beyond pose 0) and appearance."})
    seed: int = field(default=0, metadata={"help": "Base seed of every random draw."})
    split_fractions: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1], metadata={"help": "train/validation/test."})
    device: str = field(default="auto", metadata={"help": "torch device for projection: auto, cpu, cuda."})
    codec: str = field(default="default", metadata={"help": "Mask codec for text targets: default, a folder, a Hub id, none."})
    push_to_hub: str | None = field(default=None, metadata={"help": "Hub dataset repo to upload to, e.g. chexanatomy/drr."})
    private: bool = field(default=False, metadata={"help": "Create the Hub repo as private."})

    def __post_init__(self):
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {self.source!r}")
        if bad := [v for v in self.views if v not in VIEWS]:
            raise ValueError(f"views: unknown {bad}; choose among {VIEWS}")
        if not 32 <= self.size_px <= 1024:
            raise ValueError(f"size_px must be in 32..1024, got {self.size_px}")
        if self.num_subjects < 1 or self.poses_per_view < 1:
            raise ValueError("num_subjects and poses_per_view must be at least 1")
        if self.mask_threshold_mm <= 0:
            raise ValueError(f"mask_threshold_mm must be positive, got {self.mask_threshold_mm}")
        split_of("check", tuple(self.split_fractions))  # validates the fractions

    def render_settings(self) -> RenderSettings:
        return RenderSettings(
            self.size_px, tuple(self.views), self.poses_per_view, self.mask_threshold_mm, self.min_area_px,
            self.randomize, seed=self.seed,
        )  # fmt: skip

    def content_dict(self, tokenizer: MaskTokenizer | None = None) -> dict:
        """Everything that determines the shards' content (resume refuses to mix two of these)."""
        out = {k: v for k, v in asdict(self).items() if k not in _NON_CONTENT}
        if tokenizer is not None:
            out["mask_tokens"] = {**tokenizer.settings(), "codec_fingerprint": codec_fingerprint(tokenizer.codec)}
        return out

    def tokenizer(self) -> MaskTokenizer | None:
        return None if self.codec == "none" else default_tokenizer(load_codec(self.codec))


def iter_subjects(config: BuildConfig) -> Iterator[tuple[str, callable]]:
    """(subject id, loader) pairs; loaders are lazy so a resumed build never touches finished subjects."""
    base: dict[str, CTVolume] = {}

    def loader(subject_id: str):
        def load() -> CTVolume:
            if "ct" not in base:
                base["ct"] = load_embedded() if config.source == "embedded" else make_thorax_phantom()
            seed = stable_seed(config.seed, "deform", subject_id)
            return deform(base["ct"], seed, subject_id, config.deformation_strength)[0]

        return load

    for i in range(config.num_subjects):
        subject_id = f"{config.source}-ps{i:03d}"
        yield subject_id, loader(subject_id)


def resolve_device(name: str) -> str:
    return ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name


def _check_resume(root: Path, content: dict) -> None:
    saved = root / "build_config.json"
    if saved.exists():
        previous = {k: v for k, v in json.loads(saved.read_text()).items() if k not in _NON_CONTENT}
        if previous != content:
            changed = sorted(k for k in {*content, *previous} if previous.get(k) != content.get(k))
            raise SystemExit(
                f"{root} holds a corpus built with different settings ({', '.join(changed)}); "
                "use a new --output_dir or delete the folder."
            )
    root.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(content, indent=2, sort_keys=True) + "\n")


def build(config: BuildConfig) -> dict:
    """Build (or resume) the corpus described by ``config``; returns a summary dict."""
    start = time.time()
    root = Path(config.output_dir)
    tokenizer = config.tokenizer()
    content = config.content_dict(tokenizer)
    _check_resume(root, content)
    settings, device = config.render_settings(), resolve_device(config.device)
    built = skipped = images = 0
    provenance = set()
    for subject_id, load in tqdm(list(iter_subjects(config)), desc="subjects", unit="CT"):
        path = shard_path(root, split_of(subject_id, tuple(config.split_fractions)), subject_id)
        if path.exists():
            skipped += 1
            continue
        ct = load()
        provenance.add(ct.provenance)
        views = render_subject(ct, settings, device)
        write_shard([to_row(v, subject_id, ct.source, settings.mask_threshold_mm, tokenizer) for v in views], path)
        built, images = built + 1, images + len(views)
    provenance = sorted(provenance) or [load().provenance]
    write_card(root, content, provenance, config.push_to_hub or "chexanatomy/drr")
    summary = {"built": built, "resumed_skipped": skipped, "images": images, "seconds": round(time.time() - start, 1)}
    if config.push_to_hub:
        from .hub import push_corpus

        summary["pushed"] = push_corpus(root, config.push_to_hub, config.private)
    return summary
