"""The project's default mask codec: the anatomy-trained `vae-oid` VQ-VAE bundled with the package.

Everything that turns masks into `<seg>` tokens and back (corpus targets, training, evaluation, the Space)
gets its codec here unless the user names another one, so a target can always be traced to the codec that
made it: ``codec_fingerprint`` is recorded in every corpus card and build configuration.

The bundled weights (``assets/mask_codec/``) were trained by ``python -m train.codec`` on the embedded
corpus (see its ``training_config.json``); ``DEFAULT_CODEC_REPO`` is where the same weights are published.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from .locate import locate_model
from .mask_tokens import MaskTokenizer
from .vqvae import MaskVQVAE

DEFAULT_CODEC_DIR = Path(__file__).parent / "assets" / "mask_codec"
DEFAULT_CODEC_REPO = "chexanatomy/mask-codec-anatomy"
DEFAULT_CODEC_VERSION = "v1"


def load_codec(name_or_path: str | Path | None = "default") -> MaskVQVAE | None:
    """A codec in eval mode on the CPU, the one loader for every part and every ``--codec``/``--init_from`` flag.

    Args:
        name_or_path: ``"default"`` or ``None``: the bundled anatomy codec; ``"none"``: no codec (returns None;
            a corpus built so has no token targets); a path ending in ``.npz``: a big_vision ``vae-oid``
            checkpoint (``chexanatomy.vae_oid``); a folder saved by ``MaskVQVAE.save_pretrained``; or a Hub id.

    Raises:
        FileNotFoundError: when the bundled weights are missing from this installation, the ``.npz`` is missing, or
            ``name_or_path`` is no codec folder and no reachable Hub id (a mistyped local path never goes to the
            Hub; ``chexanatomy.locate``).
        ValueError: for an ``.npz`` that is no ``vae-oid`` checkpoint.
    """
    if name_or_path is not None and str(name_or_path).lower() == "none":
        return None
    if name_or_path in (None, "default"):
        if not (DEFAULT_CODEC_DIR / "model.safetensors").exists():
            raise FileNotFoundError(f"the bundled codec is missing: {DEFAULT_CODEC_DIR}/model.safetensors")
        name_or_path = DEFAULT_CODEC_DIR
    if str(name_or_path).endswith(".npz"):
        from .vae_oid import load_vae_oid_npz

        return load_vae_oid_npz(name_or_path).eval()
    return MaskVQVAE.from_pretrained(str(locate_model(name_or_path)), strict=True).eval()


def codec_fingerprint(codec: MaskVQVAE) -> str:
    """``sha256:<16 hex>`` over the codec's parameters and buffers (names, shapes, float32 bytes), in name order.

    Two codecs with this fingerprint produce the same tokens for the same crops.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(codec.state_dict().items()):
        if "ema" in name or "steps_unused" in name:
            continue  # training state: does not change encoding or decoding
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return "sha256:" + digest.hexdigest()[:16]


def default_tokenizer(codec: MaskVQVAE | None = None) -> MaskTokenizer:
    """The corpus's encoding: tight boxes, anti-aliased bilinear 64x64 crops (big_vision's reference)."""
    return MaskTokenizer(codec or load_codec(), resize="bilinear", widen_px=0)
