"""The `vae-oid` mask VQ-VAE: architecture, Hub round trip, big_vision npz layout, EMA training state."""

import json
import warnings

import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view

from chexanatomy.vae_oid import VAE_OID_CODEBOOK_KEY, export_vae_oid_npz, load_vae_oid_npz
from chexanatomy.vqvae import MaskVQVAE, run_inference


def _blob_masks(count: int, seed: int = 0) -> torch.Tensor:
    """[count, 64, 64] float {0, 1}: random half-planes and rectangles, so grid cells differ."""
    generator = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    masks = []
    for _ in range(count):
        a, b, c = (torch.rand(3, generator=generator) - 0.5) * torch.tensor([2.0, 2.0, 64.0])
        y0, x0 = torch.randint(0, 40, (2,), generator=generator).tolist()
        half_plane = a * (yy - 32) + b * (xx - 32) > c
        rectangle = torch.zeros(64, 64, dtype=torch.bool)
        rectangle[y0 : y0 + 20, x0 : x0 + 24] = True
        masks.append((half_plane ^ rectangle).float())
    return torch.stack(masks)


@pytest.fixture(scope="module")
def codec() -> MaskVQVAE:
    """An untrained codec whose codebook is set to real encoder outputs, so cells get different codes."""
    torch.manual_seed(0)
    model = MaskVQVAE().eval()
    latents = model.encode_latents(_blob_masks(16, seed=1)).detach().reshape(-1, 512)
    model.quantizer.codebook.copy_(latents[torch.randperm(len(latents))[:128]])
    return model


# ---------------------------------------------------------------------------------------------------
# Architecture
# ---------------------------------------------------------------------------------------------------

SPEC_SHAPES = {
    "encoder.0.weight": (16, 1, 4, 4),
    "encoder.2.weight": (32, 16, 4, 4),
    "encoder.4.weight": (64, 32, 4, 4),
    "encoder.6.weight": (128, 64, 4, 4),
    "encoder.8.net.0.weight": (128, 128, 3, 3),
    "encoder.9.net.2.weight": (128, 128, 3, 3),
    "encoder.9.net.4.weight": (128, 128, 1, 1),
    "encoder.10.weight": (512, 128, 1, 1),
    "encoder.10.bias": (512,),
    "decoder.0.weight": (128, 512, 1, 1),
    "decoder.2.net.0.weight": (128, 128, 3, 3),
    "decoder.3.net.4.weight": (128, 128, 1, 1),
    "decoder.4.weight": (128, 128, 4, 4),  # ConvTranspose: [in, out, kh, kw]
    "decoder.6.weight": (128, 64, 4, 4),
    "decoder.8.weight": (64, 32, 4, 4),
    "decoder.10.weight": (32, 16, 4, 4),
    "decoder.12.weight": (1, 16, 1, 1),
    "decoder.12.bias": (1,),
    "quantizer.codebook": (128, 512),
}


def test_parameter_names_and_shapes_match_the_spec():
    model = MaskVQVAE()
    state = model.state_dict()
    for name, shape in SPEC_SHAPES.items():
        assert tuple(state[name].shape) == shape, name
    # Every convolution has a bias, and the ReLUs sit at the odd indices the official names skip.
    convs = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    assert len(convs) == 5 + 6 + 1 + 6 + 5 and all(conv.bias is not None for conv in convs)
    assert isinstance(model.encoder[10], torch.nn.Conv2d) and model.encoder[10].kernel_size == (1, 1)
    assert isinstance(model.decoder[12], torch.nn.Conv2d) and model.decoder[12].out_channels == 1
    assert all(isinstance(model.decoder[i], torch.nn.ConvTranspose2d) for i in (4, 6, 8, 10))
    assert all(isinstance(model.encoder[i], torch.nn.ReLU) for i in (1, 3, 5, 7))


def test_codec_maps_64x64_masks_to_16_codes_and_back(codec):
    masks = _blob_masks(3)
    indices = codec.encode_indices(masks)
    assert indices.shape == (3, 16) and indices.dtype == torch.int64
    assert 0 <= indices.min() and indices.max() < 128
    assert len(indices.unique()) > 4  # the fixture codebook makes cells differ
    decoded = codec.decode_indices(indices)
    assert decoded.shape == (3, 64, 64) and decoded.dtype == torch.float32


def test_inference_path_gives_the_training_path_codes_and_maps(codec):
    """encode_indices/decode_indices run channels-last with a matrix-vector output layer: same codes, same masks."""
    masks = _blob_masks(8, seed=3)
    latents = codec.encode_latents(masks).detach()
    reference_codes = codec.quantizer.nearest(latents.reshape(-1, 512)).reshape(-1, 16)
    assert torch.equal(codec.encode_indices(masks), reference_codes)
    reference_maps = codec.decode_latents(codec.quantizer.codebook[reference_codes]).detach()
    maps = codec.decode_indices(reference_codes)
    assert maps.shape == (8, 64, 64) and maps.dtype == torch.float32
    torch.testing.assert_close(maps, reference_maps, rtol=1e-4, atol=1e-5)
    assert torch.equal(maps > 0, reference_maps > 0)


def test_inference_runs_in_chunks_without_changing_the_result(codec):
    """run_inference splits the batch into chunks (bounded memory); any chunk size gives the same maps."""
    x = 2 * _blob_masks(10, seed=5)[:, None] - 1
    whole = run_inference(codec.encoder, x, chunk_size=10)
    torch.testing.assert_close(run_inference(codec.encoder, x, chunk_size=3), whole, rtol=1e-5, atol=1e-6)
    maps = run_inference(codec.decoder, whole, chunk_size=10)
    assert maps.shape == (10, 1, 64, 64)
    torch.testing.assert_close(run_inference(codec.decoder, whole, chunk_size=4), maps, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="chunk_size"):
        run_inference(codec.encoder, x, chunk_size=0)


def test_bfloat16_autocast_keeps_codes_and_masks_close():
    """On the trained (bundled) codec; an untrained codebook has near ties that any rounding flips."""
    from chexanatomy.codec import load_codec

    codec = load_codec()
    masks = _blob_masks(16, seed=4)
    codes = codec.encode_indices(masks)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast_codes = codec.encode_indices(masks)
        fast_maps = codec.decode_indices(codes)
    assert fast_maps.dtype == torch.float32
    assert (fast_codes == codes).float().mean() > 0.9
    assert ((fast_maps > 0) == (codec.decode_indices(codes) > 0)).float().mean() > 0.98


def test_codec_rejects_wrong_shapes_and_out_of_range_codes(codec):
    with pytest.raises(ValueError, match=r"\[B, 64, 64\]"):
        codec.encode_indices(torch.zeros(2, 32, 32))
    with pytest.raises(ValueError, match="0..127"):
        codec.decode_indices(torch.full((1, 16), 128))
    with pytest.raises(ValueError, match=r"\[B, 16\]"):
        codec.decode_indices(torch.zeros(1, 15, dtype=torch.long))


# ---------------------------------------------------------------------------------------------------
# Saving and loading
# ---------------------------------------------------------------------------------------------------


def test_save_pretrained_round_trip_is_exact(codec, tmp_path):
    codec.quantizer.steps_unused[:3] = torch.tensor([5, 6, 7])  # training state must survive too
    codec.save_pretrained(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"config.json", "model.safetensors", "README.md"}
    config = json.loads((tmp_path / "config.json").read_text())
    assert config == {
        "num_embeddings": 128,
        "embedding_dim": 512,
        "commitment_cost": 0.25,
        "decay": 0.99,
        "epsilon": 1e-5,
    }
    assert "library_name: chexanatomy" in (tmp_path / "README.md").read_text()

    loaded = MaskVQVAE.from_pretrained(tmp_path)
    masks = _blob_masks(4)
    assert torch.equal(loaded.encode_indices(masks), codec.encode_indices(masks))
    indices = torch.randint(0, 128, (4, 16))
    assert torch.equal(loaded.decode_indices(indices), codec.decode_indices(indices))
    assert torch.equal(loaded.quantizer.steps_unused, codec.quantizer.steps_unused)
    codec.quantizer.steps_unused.zero_()


def test_npz_export_then_load_is_exact(codec, tmp_path):
    path = export_vae_oid_npz(codec, tmp_path / "vae-oid.npz")
    with np.load(path) as archive:
        keys = set(archive.files)
        assert archive[VAE_OID_CODEBOOK_KEY].shape == (128, 512)
        assert archive["decoder.4.weight"].shape == (128, 128, 4, 4)
        assert archive["encoder.8.net.0.weight"].dtype == np.float32
    # The official names only: no EMA buffers, no `quantizer.*`.
    assert keys == {k for k in codec.state_dict() if not k.startswith("quantizer.")} | {VAE_OID_CODEBOOK_KEY}

    loaded = load_vae_oid_npz(path)
    masks = _blob_masks(4)
    assert torch.equal(loaded.encode_indices(masks), codec.encode_indices(masks))
    indices = torch.randint(0, 128, (4, 16))
    assert torch.equal(loaded.decode_indices(indices), codec.decode_indices(indices))
    assert torch.equal(loaded.quantizer.ema_w, loaded.quantizer.codebook)  # EMA restarts from the codebook


def _rewrite(path, out, rename=None, replace=None, extra=None):
    """Copy an npz with one key renamed / one array replaced / one array added."""
    with np.load(path) as archive:
        arrays = {key: archive[key] for key in archive.files}
    if rename:
        arrays[rename[1]] = arrays.pop(rename[0])
    if replace:
        arrays[replace[0]] = replace[1]
    if extra:
        arrays.update(extra)
    np.savez(out, **arrays)
    return out


def test_npz_loader_names_what_is_wrong(codec, tmp_path):
    good = export_vae_oid_npz(codec, tmp_path / "good.npz")

    renamed = _rewrite(good, tmp_path / "renamed.npz", rename=("decoder.4.weight", "decoder.4.kernel"))
    with pytest.raises(ValueError, match=r"renamed\.npz: missing 1 vae-oid parameter\(s\): decoder\.4\.weight"):
        load_vae_oid_npz(renamed)

    flax_layout = np.transpose(codec.encoder[10].weight.detach().numpy(), (2, 3, 1, 0))
    misshaped = _rewrite(good, tmp_path / "flax.npz", replace=("encoder.10.weight", flax_layout))
    wrong_shape = r"encoder\.10\.weight has shape \(1, 1, 128, 512\), expected \(512, 128, 1, 1\)"
    with pytest.raises(ValueError, match=wrong_shape):
        load_vae_oid_npz(misshaped)

    not_npz = tmp_path / "notes.npz"
    not_npz.write_text("not a zip archive")
    with pytest.raises(ValueError, match="notes.npz: cannot read"):
        load_vae_oid_npz(not_npz)

    with pytest.raises(FileNotFoundError):
        load_vae_oid_npz(tmp_path / "absent.npz")

    with_extra = _rewrite(good, tmp_path / "extra.npz", extra={"_vq_vae._ema_w": np.zeros((128, 512))})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_vae_oid_npz(with_extra)
    assert any("_vq_vae._ema_w" in str(w.message) for w in caught)


# ---------------------------------------------------------------------------------------------------
# Consistency with big_vision, which reads the npz into TF/flax (HWIO kernels, NHWC activations).
# A numpy transcription of `pp/proj/paligemma/segmentation.py` (encoder) and
# `evaluators/proj/paligemma/transfers/segmentation.py` (decoder), reading the exported file.
# ---------------------------------------------------------------------------------------------------


def _np_conv(x, kernel_hwio, bias, stride=1, pad=None):
    """NHWC cross-correlation; pad=None means TF 'SAME'."""
    kh, kw, c_in, c_out = kernel_hwio.shape
    if pad is None:
        total = max((-(-x.shape[1] // stride) - 1) * stride + kh - x.shape[1], 0)
        pad = (total // 2, total - total // 2)
    x = np.pad(x, ((0, 0), pad, pad, (0, 0)))
    windows = sliding_window_view(x, (kh, kw), axis=(1, 2))[:, ::stride, ::stride]  # [B, H, W, C, kh, kw]
    b, h, w = windows.shape[:3]
    patches = windows.transpose(0, 1, 2, 4, 5, 3).reshape(b * h * w, kh * kw * c_in)
    return (patches @ kernel_hwio.reshape(-1, c_out)).reshape(b, h, w, c_out) + bias


def _bv_conv(ckpt, x, name, stride=1):
    return _np_conv(x, np.transpose(ckpt[name + ".weight"], (2, 3, 1, 0)), ckpt[name + ".bias"], stride)


def _bv_resblock(ckpt, x, name):
    y = np.maximum(_bv_conv(ckpt, x, name + ".0"), 0)
    y = np.maximum(_bv_conv(ckpt, y, name + ".2"), 0)
    return x + _bv_conv(ckpt, y, name + ".4")


def _bv_conv_transpose(ckpt, x, name):
    """flax ConvTranspose(k4, s2, padding=2, transpose_kernel=True) on transp(weight)."""
    kernel = np.transpose(ckpt[name + ".weight"], (2, 3, 1, 0))  # [kh, kw, out, in]
    kernel = np.swapaxes(kernel[::-1, ::-1], 2, 3)  # transpose_kernel: flip space, swap in/out
    b, h, w, c = x.shape
    dilated = np.zeros((b, 2 * h - 1, 2 * w - 1, c))
    dilated[:, ::2, ::2] = x
    return _np_conv(dilated, kernel, ckpt[name + ".bias"], pad=(2, 2))


def _bv_encode(ckpt, masks):
    x = 2.0 * (masks[..., None] - 0.5)
    for n in range(4):
        x = np.maximum(_bv_conv(ckpt, x, f"encoder.{2 * n}", stride=2), 0)
    for n in range(2):
        x = _bv_resblock(ckpt, x, f"encoder.{8 + n}.net")
    x = _bv_conv(ckpt, x, "encoder.10")
    embeddings = ckpt[VAE_OID_CODEBOOK_KEY]
    flat = x.reshape(-1, embeddings.shape[1])
    distances = (flat**2).sum(1, keepdims=True) + (embeddings**2).sum(1) - 2 * flat @ embeddings.T
    return distances.argmin(1).reshape(-1, 16)


def _bv_decode(ckpt, indices):
    x = ckpt[VAE_OID_CODEBOOK_KEY][indices.reshape(-1)].reshape(len(indices), 4, 4, -1)
    x = np.maximum(_bv_conv(ckpt, x, "decoder.0"), 0)
    x = _bv_resblock(ckpt, x, "decoder.2.net")
    x = _bv_resblock(ckpt, x, "decoder.3.net")
    for name in ("decoder.4", "decoder.6", "decoder.8", "decoder.10"):
        x = np.maximum(_bv_conv_transpose(ckpt, x, name), 0)
    return _bv_conv(ckpt, x, "decoder.12")[..., 0]


def test_exported_npz_reads_the_same_in_big_vision_layout(codec, tmp_path):
    path = export_vae_oid_npz(codec, tmp_path / "vae-oid.npz")
    with np.load(path) as archive:
        ckpt = {key: archive[key].astype(np.float64) for key in archive.files}
    masks = _blob_masks(3, seed=5)
    indices = codec.encode_indices(masks)
    assert np.array_equal(_bv_encode(ckpt, masks.numpy().astype(np.float64)), indices.numpy())
    random_indices = torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(3))
    expected = _bv_decode(ckpt, random_indices.numpy())
    np.testing.assert_allclose(codec.decode_indices(random_indices).numpy(), expected, atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------------------------------------------
# Training state
# ---------------------------------------------------------------------------------------------------


def test_training_step_updates_every_parameter():
    torch.manual_seed(0)
    model = MaskVQVAE()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    out = model(_blob_masks(4))
    assert out.reconstruction.shape == (4, 64, 64) and out.indices.shape == (4, 16)
    assert out.latents.shape == (4, 16, 512) and not out.latents.requires_grad
    assert torch.isclose(out.loss, out.reconstruction_loss + out.commitment_loss)
    out.loss.backward()
    optimizer.step()
    unchanged = [name for name, p in model.named_parameters() if torch.equal(p, before[name])]
    assert unchanged == []


def test_ema_moves_a_used_code_onto_its_latents_and_leaves_others():
    torch.manual_seed(0)
    model = MaskVQVAE()
    target = torch.randn(512)
    untouched = model.quantizer.codebook[7].clone()
    for _ in range(500):  # 0.99 ** 500 < 0.01: the start is forgotten
        model.ema_update(target.expand(2, 16, 512), torch.full((2, 16), 3))
    assert torch.allclose(model.quantizer.codebook[3], target, atol=0.02)
    # An unused code keeps its value (up to the Laplace smoothing of its shrinking cluster size).
    assert torch.allclose(model.quantizer.codebook[7], untouched, rtol=0.01)
    assert model.quantizer.steps_unused[3] == 0 and model.quantizer.steps_unused[7] == 500


def test_dead_codes_restart_from_encoder_outputs():
    torch.manual_seed(0)
    model = MaskVQVAE()
    latents = torch.randn(8, 16, 512)
    for _ in range(3):
        model.ema_update(latents, torch.zeros(8, 16, dtype=torch.long))  # only code 0 is used
    assert model.restart_dead_codes(latents, max_unused_steps=4) == 0  # not dead long enough yet
    assert model.restart_dead_codes(latents, max_unused_steps=3, generator=torch.Generator().manual_seed(0)) == 127
    pool = latents.reshape(-1, 512)
    restarted = model.quantizer.codebook[1:]
    assert all((pool == code).all(1).any() for code in restarted)  # every new code is an encoder output
    assert len(restarted.unique(dim=0)) == 127 and model.quantizer.steps_unused.max() == 0
    # The restarted codes are now the nearest for their latents: they get used.
    assert len(model.quantizer.nearest(pool).unique()) > 100
