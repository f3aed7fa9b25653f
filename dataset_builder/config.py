"""The build configuration: every ``--flag`` of ``python -m dataset_builder build``, checked, with no I/O.

``BuildConfig`` is the first stage of a build (CLI -> config -> sources -> stages -> corpus rows -> folder): it
validates the flags and says which of them decide the shards' content (``content_dict``, recorded in
``build_config.json``; a resume must match it).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

from chexanatomy.cli import HubOptions
from chexanatomy.codec import codec_fingerprint
from chexanatomy.mask_tokens import MaskTokenizer

from .corpus import check_fractions
from .geometry import VIEWS
from .render import FRAMINGS, RenderSettings
from .sources import PROVENANCE

SOURCES = tuple(PROVENANCE)
ENGINES = ("local", "ray")
# Fields that do not change the content of the shards; a resumed or sharded build may change them.
NON_CONTENT = {
    "output_dir", "push_to_hub", "hub_model_id", "hub_private_repo", "device", "num_proc", "shard", "engine",
    "ray_address", "cache_dir",
}  # fmt: skip
MAX_NUM_SUBJECTS = 100_000  # pseudo-subjects of one CT; more add no anatomy (~1 s and ~100 kB each at 512 px)
# At 3 the warp scales the body by up to +-36 % and rotates it by up to 18 degrees: beyond, organs fold over.
MAX_DEFORMATION_STRENGTH = 3.0
MAX_MASK_THRESHOLD_MM = 100.0  # a ray needs this path length through a structure; over 100 mm no rib is ever in a mask


@dataclass
class BuildConfig(HubOptions):
    """Configuration of ``python -m dataset_builder build`` (every field is a ``--flag``).

    Publishing (``HubOptions``): ``--push_to_hub true --hub_model_id OWNER/NAME`` uploads shards to that dataset
    repository as they are built, and the card at the end.
    """

    source: str = field(default="embedded", metadata={"help": f"Where the CTs come from: one of {SOURCES}."})
    output_dir: str = field(
        default="outputs/drr", metadata={"help": "Corpus folder, a path or fsspec URL (created; resumable)."}
    )
    root: str | None = field(
        default=None, metadata={"help": "totalsegmentator: the dataset folder (one folder per CT); path or URL."}
    )
    ct: str | None = field(default=None, metadata={"help": "pairs: a CT (NIfTI file or DICOM series folder)."})
    labels: str | None = field(default=None, metadata={"help": "pairs: its multilabel map (NIfTI)."})
    label_names: str = field(default="v2", metadata={"help": "pairs: label ids: v1, v2 or a CSV/JSON id -> name file."})
    pairs_csv: str | None = field(
        default=None,
        metadata={"help": "pairs: CSV (path or URL) with subject_id, ct, labels[, label_names, split]; paths in it "
                  "are relative to it, or URLs."},
    )
    num_subjects: int = field(
        default=10, metadata={"help": "embedded/phantom: pseudo-subjects (deformed copies) to make."}
    )
    deformation_strength: float = field(default=1.0, metadata={"help": "Scale of the pseudo-subject warps; 0 = none."})
    views: list[str] = field(default_factory=lambda: ["PA", "LAT"], metadata={"help": f"Views among {VIEWS}."})
    poses_per_view: int = field(default=3, metadata={"help": "Poses per view; pose 0 is the standard position."})
    size_px: int = field(default=512, metadata={"help": "Image height = width in pixels (224-1024; 32+ for tests)."})
    mask_threshold_mm: float = field(default=1.5, metadata={"help": "Path length (mm) a ray needs to be in a mask."})
    min_area_px: int = field(default=8, metadata={"help": "Omit structures smaller than this in a view."})
    randomize: bool = field(default=True, metadata={"help": "Random poses (beyond pose 0) and appearance."})
    seed: int = field(default=0, metadata={"help": "Base seed of every random draw."})
    virtual_non_contrast: bool = field(
        default=True, metadata={"help": "Set an enhanced CT's blood pool (judged from its labels) to unenhanced blood."}
    )
    extend_body: bool = field(
        default=True, metadata={"help": "Continue the body beyond the CT (neck, abdomen, cut arms): no CT box edges."}
    )
    framing: str = field(
        default="radiograph",
        metadata={"help": f"{FRAMINGS}: fit the field to the lungs as a radiographer does, or a fixed 430 mm field."},
    )
    physics: bool = field(
        default=True, metadata={"help": "Beam hardening, scatter, detector blur (MTF) and quantum noise."}
    )
    processing: float = field(
        default=1.0, metadata={"help": "Strength in [0, 1] of clinical processing, collimation and markers."}
    )
    split_fractions: list[float] = field(
        default_factory=lambda: [0.8, 0.1, 0.1], metadata={"help": "train/validation/test."}
    )
    codec: str = field(
        default="default",
        metadata={"help": "Mask codec for text targets: default, a folder, a vae-oid .npz, a Hub id, none."},
    )
    num_proc: int = field(
        default=1, metadata={"help": "Worker processes (one CT in memory each); engine ray: CPUs of a local Ray."}
    )
    shard: str = field(default="0/1", metadata={"help": "i/N: build only part i of N (for N machines)."})
    device: str = field(default="auto", metadata={"help": "torch device for projection: auto, cpu, cuda."})
    engine: str = field(
        default="local", metadata={"help": f"{ENGINES}: this machine (--num_proc processes), or a Ray cluster."}
    )
    ray_address: str | None = field(
        default=None,
        metadata={"help": "engine ray: the cluster (auto, ray://head:10001, ...); none: a local Ray, --num_proc CPUs."},
    )
    cache_dir: str | None = field(
        default=None, metadata={"help": "Local cache of remote inputs (default $CHEXANATOMY_CACHE/inputs)."}
    )

    def __post_init__(self):
        super().__post_init__()  # --push_to_hub true needs --hub_model_id
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {self.source!r}")
        if self.source == "totalsegmentator" and not self.root:
            raise ValueError("source totalsegmentator needs --root (the dataset folder)")
        if self.source == "pairs" and not (self.pairs_csv or (self.ct and self.labels)):
            raise ValueError("source pairs needs --ct and --labels, or --pairs_csv")
        if bad := [v for v in self.views if v not in VIEWS]:
            raise ValueError(f"views: unknown {bad}; choose among {VIEWS}")
        self._check_numbers()
        if not 32 <= self.size_px <= 1024:
            raise ValueError(f"size_px must be in 32..1024, got {self.size_px}")
        if self.num_subjects < 1 or self.poses_per_view < 1 or self.num_proc < 1:
            raise ValueError("num_subjects, poses_per_view and num_proc must be at least 1")
        if not 0 < self.mask_threshold_mm <= MAX_MASK_THRESHOLD_MM:
            raise ValueError(f"--mask_threshold_mm must be in (0, {MAX_MASK_THRESHOLD_MM:g}] mm, got "
                             f"{self.mask_threshold_mm}")  # fmt: skip
        if not 0 <= self.deformation_strength <= MAX_DEFORMATION_STRENGTH:
            raise ValueError(f"--deformation_strength must be in [0, {MAX_DEFORMATION_STRENGTH:g}] (1 = the default "
                             f"warp), got {self.deformation_strength}")  # fmt: skip
        if self.num_subjects > MAX_NUM_SUBJECTS:
            raise ValueError(f"--num_subjects must be at most {MAX_NUM_SUBJECTS:,}, got {self.num_subjects:,}")
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {self.engine!r}")
        self.shard_index()  # validates --shard
        self.render_settings()  # validates --framing and --processing
        check_fractions(self.split_fractions)

    def _check_numbers(self) -> None:
        """``ValueError`` naming the flag when a number (or one in a list) is NaN or infinite.

        ``float("nan")`` passes every comparison-based range check (``nan < 0`` is False), and would reach
        ``build_config.json`` as ``NaN``, which is not JSON.
        """
        for f in fields(self):
            value = getattr(self, f.name)
            values = value if isinstance(value, list) else [value]
            if any(isinstance(v, float) and not math.isfinite(v) for v in values):
                raise ValueError(f"--{f.name} must be finite numbers, got {value}")

    def shard_index(self) -> tuple[int, int]:
        """``--shard i/N`` parsed to ``(i, N)`` with ``0 <= i < N``; raises ``ValueError`` if malformed."""
        try:
            index, count = (int(v) for v in self.shard.split("/"))
        except ValueError:
            raise ValueError(f"shard must look like i/N (e.g. 0/8), got {self.shard!r}") from None
        if not 0 <= index < count:
            raise ValueError(f"shard {self.shard}: need 0 <= i < N")
        return index, count

    def render_settings(self) -> RenderSettings:
        """The rendering part of this config (size, views, poses, mask threshold, ...) as ``RenderSettings``."""
        return RenderSettings(
            self.size_px, tuple(self.views), self.poses_per_view, self.mask_threshold_mm, self.min_area_px,
            self.randomize, seed=self.seed, virtual_non_contrast=self.virtual_non_contrast,
            extend_body=self.extend_body, framing=self.framing, physics=self.physics, processing=self.processing,
        )  # fmt: skip

    def content_dict(self, tokenizer: MaskTokenizer | None = None) -> dict:
        """Everything that determines the shards' content (resume refuses to mix two of these)."""
        out = {k: v for k, v in asdict(self).items() if k not in NON_CONTENT}
        if tokenizer is not None:
            out["mask_tokens"] = {**tokenizer.settings(), "codec_fingerprint": codec_fingerprint(tokenizer.codec)}
        return out
