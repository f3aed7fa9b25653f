"""The official `vae-oid.npz` checkpoint format of the mask codec: load it into a `MaskVQVAE`, export one to it.

    from chexanatomy.vae_oid import load_vae_oid_npz
    codec = load_vae_oid_npz("vae-oid.npz")          # big_vision's PaliGemma mask codec, eval mode

``chexanatomy.codec.load_codec`` takes a ``.npz`` path too and calls this module. The format is a plain
``numpy.savez`` archive of float32 arrays named as ``MaskVQVAE``'s state dict (layout below), so loading is a
name map and a shape check, no transpose.
"""

import os
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

from .vqvae import MaskVQVAE

# ---------------------------------------------------------------------------------------------------
# The official `vae-oid.npz` layout.
#
# big_vision loads the file as `dict(np.load(f))` and reads it as a *PyTorch* state dict: it transposes
# every conv weight with (2, 3, 1, 0) into flax HWIO, and reads the ConvTranspose weights the same way
# with `transpose_kernel=True`. So the file holds, as float32 arrays:
#   encoder.{0,2,4,6,10}.{weight,bias}, encoder.{8,9}.net.{0,2,4}.{weight,bias}   Conv2d [out, in, kh, kw]
#   decoder.{0,12}.{weight,bias}, decoder.{2,3}.net.{0,2,4}.{weight,bias}         Conv2d [out, in, kh, kw]
#   decoder.{4,6,8,10}.{weight,bias}                                  ConvTranspose2d [in, out, kh, kw]
#   _vq_vae._embedding                                                codebook [K=128, D=512]
# i.e. exactly this module's state-dict names and layouts, except the codebook. No transpose is needed
# in PyTorch. The EMA training state is not part of the official file and is not exported.
# ---------------------------------------------------------------------------------------------------

VAE_OID_CODEBOOK_KEY = "_vq_vae._embedding"
_CODEBOOK_KEY = "quantizer.codebook"
_TRAINING_STATE_KEYS = ("quantizer.ema_cluster_size", "quantizer.ema_w", "quantizer.steps_unused")


def vae_oid_shapes(model: MaskVQVAE) -> dict[str, tuple[int, ...]]:
    """The `vae-oid.npz` key -> array shape table that `model` reads and writes."""
    shapes = {}
    for key, value in model.state_dict().items():
        if key not in _TRAINING_STATE_KEYS:
            shapes[VAE_OID_CODEBOOK_KEY if key == _CODEBOOK_KEY else key] = tuple(value.shape)
    return shapes


def export_vae_oid_npz(model: MaskVQVAE, path: str | os.PathLike) -> Path:
    """Write `model`'s weights as a big_vision-compatible `vae-oid.npz` (layout above).

    Args:
        model: the codec to export.
        path: output file; numpy appends `.npz` when the name lacks it.

    Returns:
        The path written.
    """
    state = model.state_dict()
    arrays = {}
    for npz_key in vae_oid_shapes(model):
        key = _CODEBOOK_KEY if npz_key == VAE_OID_CODEBOOK_KEY else npz_key
        arrays[npz_key] = state[key].detach().cpu().to(torch.float32).numpy()
    path = Path(path)
    np.savez(path, **arrays)
    return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")


def load_vae_oid_npz(path: str | os.PathLike, **config) -> MaskVQVAE:
    """Build a `MaskVQVAE` from an official (or exported) `vae-oid.npz`, in eval mode.

    The EMA state starts from the loaded codebook (cluster sizes 1), so training can continue from it.

    Args:
        path: the `.npz` file (layout: see the comment above `VAE_OID_CODEBOOK_KEY`).
        **config: `MaskVQVAE` constructor arguments (defaults match `vae-oid`).

    Returns:
        The loaded model.

    Raises:
        FileNotFoundError: no file at `path`.
        ValueError: not an `.npz` archive, a required key is missing, or an array has the wrong shape
            or a non-numeric dtype. Extra keys only warn.
    """
    arrays = _read_npz(path)
    model = MaskVQVAE(**config)
    expected = vae_oid_shapes(model)
    _check_vae_oid_arrays(arrays, expected, path)
    state = {}
    for npz_key in expected:
        key = _CODEBOOK_KEY if npz_key == VAE_OID_CODEBOOK_KEY else npz_key
        state[key] = torch.from_numpy(np.asarray(arrays[npz_key], dtype=np.float32))
    state["quantizer.ema_w"] = state[_CODEBOOK_KEY].clone()
    state["quantizer.ema_cluster_size"] = torch.ones(model.num_embeddings)
    state["quantizer.steps_unused"] = torch.zeros(model.num_embeddings, dtype=torch.long)
    model.load_state_dict(state, strict=True)
    return model.eval()


def _read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All arrays of an `.npz` file; ValueError naming the path when it is not a readable one."""
    unreadable = (OSError, ValueError, zipfile.BadZipFile, EOFError)
    try:
        archive = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except unreadable as error:
        raise ValueError(f"{path}: cannot read a vae-oid .npz archive ({error})") from error
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: holds a single .npy array, not a vae-oid .npz archive")
    with archive:
        try:
            return {key: archive[key] for key in archive.files}
        except unreadable as error:
            raise ValueError(f"{path}: corrupt .npz archive ({error})") from error


def _check_vae_oid_arrays(
    arrays: dict[str, np.ndarray], expected: dict[str, tuple[int, ...]], path: str | os.PathLike
) -> None:
    """Raise ValueError naming every missing or mis-shaped key; warn about extra keys."""
    missing = sorted(set(expected) - set(arrays))
    if missing:
        present = ", ".join(sorted(arrays)[:8]) + (" ..." if len(arrays) > 8 else "")
        raise ValueError(
            f"{path}: missing {len(missing)} vae-oid parameter(s): {', '.join(missing)}. "
            f"Expected PyTorch state-dict names (encoder.*, decoder.*, {VAE_OID_CODEBOOK_KEY}); "
            f"the file has: {present or 'no arrays'}"
        )
    problems = [_array_problem(key, arrays[key], shape) for key, shape in expected.items()]
    problems = [problem for problem in problems if problem]
    if problems:
        raise ValueError(
            f"{path}: {len(problems)} vae-oid parameter(s) do not fit: " + "; ".join(problems) + ". "
            "Layout is PyTorch: Conv2d [out, in, kh, kw], ConvTranspose2d [in, out, kh, kw], "
            "codebook [K, D]; a flax-layout export (kh, kw, in, out) must be transposed back."
        )
    extra = sorted(set(arrays) - set(expected))
    if extra:
        warnings.warn(f"{path}: ignoring {len(extra)} unknown array(s): {', '.join(extra[:8])}", stacklevel=3)


def _array_problem(key: str, array: np.ndarray, shape: tuple[int, ...]) -> str:
    """Why `array` cannot be parameter `key` of `shape`, or '' when it can."""
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        return f"{key} has dtype {array.dtype}, expected float32"
    if tuple(array.shape) != shape:
        return f"{key} has shape {tuple(array.shape)}, expected {shape}"
    return ""
