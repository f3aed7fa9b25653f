"""Subject ids: the one stable hash every per-subject decision derives from, and ids as file names.

A subject's split, its render seeds, its build shard and its file name are pure functions of its id (never of
other subjects, of the machine or of the order subjects come in), so a corpus rebuilt anywhere is the same.
"""

from __future__ import annotations

import hashlib
import re

_SAFE_ID = re.compile(r"[A-Za-z0-9._-]{1,120}")
_HASH_MARK = "~"  # outside the safe alphabet: a hashed name never equals an unchanged one


def subject_digest(*parts) -> bytes:
    """SHA-256 of ``parts`` (strings, ints) joined with ``|`` as UTF-8; a lone id hashes as itself.

    Identical across processes, machines and Python versions (unlike ``hash()``).
    """
    return hashlib.sha256("|".join(str(p) for p in parts).encode("utf-8", errors="surrogatepass")).digest()


def stable_fraction(*parts) -> float:
    """A number in [0, 1), uniform over ids: the first 32 bits of :func:`subject_digest` (big-endian) / 2**32."""
    return int.from_bytes(subject_digest(*parts)[:4], "big") / 2**32


def stable_seed(*parts) -> int:
    """A 63-bit seed (``numpy``/``torch`` take it): the first 64 bits of :func:`subject_digest` (little-endian) >> 1."""
    return int.from_bytes(subject_digest(*parts)[:8], "little") >> 1


def safe_name(subject_id: str) -> str:
    """``subject_id`` as a file-name component (letters, digits, ``._-~``), injective: two ids, two names.

    An id of at most 120 letters, digits and ``._-`` is its own name. Any other id becomes a readable prefix (other
    characters replaced by ``_``, at most 80) + ``~`` + 12 hex digits of the id's SHA-256, so ``x 1``, ``x_1`` and
    ``x/1`` get three names. Raises ``ValueError`` for an empty id.
    """
    if not subject_id:
        raise ValueError("a subject id must not be empty")
    if _SAFE_ID.fullmatch(subject_id):
        return subject_id
    return re.sub(r"[^A-Za-z0-9._-]", "_", subject_id)[:80] + _HASH_MARK + subject_digest(subject_id).hex()[:12]


__all__ = ["safe_name", "stable_fraction", "stable_seed", "subject_digest"]
