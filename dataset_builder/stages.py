"""One subject's work, in the two stages every engine runs: read, then render.

The stage after the sources (CLI -> config -> sources -> stages -> corpus rows -> folder):

* ``read_stage`` (CPU): read the CT and its labels (through the input cache), validate, deform a pseudo-subject.
* ``render_stage`` (GPU when there is one, else CPU): project every view and pose, check the views, make the rows
  (``corpus.to_row``) and the subject's Parquet shard as bytes.

Writing the bytes into the corpus folder is the engine's caller's job (``build.py``), so a shard is written by one
process whatever the engine, and the same settings give the same bytes everywhere. ``build_subject`` runs both stages
in one process and never raises for bad input: a subject that cannot be used becomes a ``failed`` result with a
one-line reason.
"""

from __future__ import annotations

import time
from functools import lru_cache

from chexanatomy.codec import default_tokenizer, load_codec
from chexanatomy.locate import resolve_device
from chexanatomy.mask_tokens import MaskTokenizer

from .checks import check_views
from .corpus import shard_bytes, to_row
from .ct import CTInputError, CTVolume
from .render import render_subject
from .sources import Subject


@lru_cache(maxsize=2)
def tokenizer_for(codec: str) -> MaskTokenizer | None:
    """One tokenizer per process and ``--codec`` (``none``: no text targets); workers load their own."""
    loaded = load_codec(codec)
    return None if loaded is None else default_tokenizer(loaded)


def failure(subject_id: str, err: BaseException) -> dict:
    """The ``failed`` result of a subject whose stage raised ``err``: its message, on one line, is the reason."""
    reason = str(err) if isinstance(err, CTInputError) else f"{type(err).__name__}: {err}"
    return {"subject_id": subject_id, "status": "failed", "reason": " ".join(s.strip() for s in reason.splitlines())}


def read_stage(subject: Subject) -> tuple[CTVolume, float]:
    """(the subject's validated ``CTVolume``, seconds); raises ``CTInputError`` for unusable input."""
    t0 = time.perf_counter()
    ct = subject.load()
    return ct, time.perf_counter() - t0


def render_stage(subject_id: str, ct: CTVolume, config, device: str) -> dict:
    """The ``built`` result of one read subject: ``shard`` (Parquet bytes), ``images`` and ``render_s``.

    ``config`` is the ``BuildConfig``. Raises ``CTInputError`` when a view fails its checks (``checks.check_views``).
    """
    t0 = time.perf_counter()
    views = render_subject(ct, config.render_settings(), device)
    check_views(views)
    tokenizer = tokenizer_for(config.codec)
    rows = [to_row(v, subject_id, ct.source, config.mask_threshold_mm, tokenizer) for v in views]
    shard = shard_bytes(rows)
    return {"subject_id": subject_id, "status": "built", "shard": shard, "images": len(views),
            "render_s": time.perf_counter() - t0}  # fmt: skip


def build_subject(subject: Subject, config) -> dict:
    """Both stages in this process: a ``built`` result (with ``read_s``) or a ``failed`` one; never raises."""
    try:
        ct, read_s = read_stage(subject)
        return {**render_stage(subject.subject_id, ct, config, resolve_device(config.device)), "read_s": read_s}
    except Exception as err:  # noqa: BLE001 - one subject's unexpected error must not stop the build
        return failure(subject.subject_id, err)
