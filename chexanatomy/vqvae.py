"""The `vae-oid` mask VQ-VAE: a 64x64 mask <-> 16 code indices of a 128 x 512 codebook.

PaliGemma writes a segmentation mask as 16 `<seg>` tokens: the indices this codec assigns to the mask
cropped to its box (see `chexanatomy.mask_tokens` for the token contract). The architecture follows
docs/mask-tokens.md and big_vision (`pp/proj/paligemma/segmentation.py` for the encoder,
`evaluators/proj/paligemma/transfers/segmentation.py` for the decoder). It is written by hand because
no library ships this codec in PyTorch; parameter names are kept identical to the official
`vae-oid.npz` so its weights load with a name map only (`chexanatomy.vae_oid.load_vae_oid_npz`).

Example:
    codec = MaskVQVAE()  # untrained; or MaskVQVAE.from_pretrained(repo_id), load_vae_oid_npz(path)
    indices = codec.encode_indices(masks)  # [B, 64, 64] float in [0, 1] -> [B, 16] int64 in 0..127
    logits = codec.decode_indices(indices)  # -> [B, 64, 64] float32, roughly [-1, 1]
    decoded_masks = logits > 0
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from .mask_tokens import CODES_PER_MASK, MASK_SIZE, NUM_SEG

GRID_SIZE = math.isqrt(CODES_PER_MASK)  # the encoder downsamples 64 -> 4: a 4x4 grid of codes
HIDDEN_CHANNELS = 128  # width of the residual stage, fixed by the official checkpoint

# TODO(lead): point at the project's public repository once it exists.
REPO_URL = "https://github.com/chexanatomy/chexanatomy"
# The paper the big_vision mask codec is "based on" (its docstrings cite it).
CODEC_PAPER_URL = "https://arxiv.org/abs/2301.02229"


class ResBlock(nn.Module):
    """Residual block `x + net(x)` at constant channels and resolution.

    `net` is Conv3x3 (p1), ReLU, Conv3x3 (p1), ReLU, Conv1x1, so the official parameter names are
    `<block>.net.0`, `<block>.net.2` and `<block>.net.4`.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, channels, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, channels, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, channels, kernel_size=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block: [B, C, H, W] -> [B, C, H, W]."""
        return x + self.net(x)


def build_encoder(embedding_dim: int = 512) -> nn.Sequential:
    """Encoder [B, 1, 64, 64] in [-1, 1] -> [B, embedding_dim, 4, 4].

    The module indices (0, 2, 4, 6 strided convs; 8, 9 ResBlocks; 10 the 1x1 projection) are the
    names in `vae-oid.npz`; do not insert layers.
    """
    return nn.Sequential(
        nn.Conv2d(1, 16, kernel_size=4, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, kernel_size=4, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 64, kernel_size=4, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(64, HIDDEN_CHANNELS, kernel_size=4, stride=2, padding=1),
        nn.ReLU(),
        ResBlock(HIDDEN_CHANNELS),
        ResBlock(HIDDEN_CHANNELS),
        nn.Conv2d(HIDDEN_CHANNELS, embedding_dim, kernel_size=1),
    )


def build_decoder(embedding_dim: int = 512) -> nn.Sequential:
    """Decoder [B, embedding_dim, 4, 4] -> [B, 1, 64, 64], roughly in [-1, 1] (mask where > 0).

    Indices 0 (1x1 conv), 2, 3 (ResBlocks), 4, 6, 8, 10 (ConvTranspose k4 s2 p1) and 12 (1x1 conv)
    are the names in `vae-oid.npz`.
    """
    return nn.Sequential(
        nn.Conv2d(embedding_dim, HIDDEN_CHANNELS, kernel_size=1),
        nn.ReLU(),
        ResBlock(HIDDEN_CHANNELS),
        ResBlock(HIDDEN_CHANNELS),
        nn.ConvTranspose2d(HIDDEN_CHANNELS, 128, kernel_size=4, stride=2, padding=1),
        nn.ReLU(),
        nn.ConvTranspose2d(128, 64, kernel_size=4, stride=2, padding=1),
        nn.ReLU(),
        nn.ConvTranspose2d(64, 32, kernel_size=4, stride=2, padding=1),
        nn.ReLU(),
        nn.ConvTranspose2d(32, 16, kernel_size=4, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 1, kernel_size=1),
    )


INFERENCE_CHUNK = 64  # masks per pass of `run_inference`: bounds its memory (the decoder's 64x64 layers)


def run_inference(layers: nn.Sequential, x: torch.Tensor, chunk_size: int = INFERENCE_CHUNK) -> torch.Tensor:
    """`layers(x)` without autograd, laid out for speed; equal to it up to float rounding (about 1e-6).

    Activations are channels-last (NHWC: oneDNN's fast convolution path on CPU, tensor cores on GPU), ReLUs
    run in place, and a final 1x1 convolution to one channel (the decoder's output) is a matrix-vector
    product over channels instead of a convolution. The batch runs in chunks of `chunk_size`, so memory does
    not grow with it: the decoder's last layers hold 256 KB per mask in float32. Decoding 4,096 masks in one
    pass raised a process's peak memory by 0.8 GB; in chunks of 64 it stayed at the level of loading the codec
    (bench/bench_codec.py, docs/codec.md; on a 2-core CPU float32 ran 8 % faster in chunks of 64 than in one
    pass of 512, bfloat16 14 % slower). Under `torch.autocast` the convolutions run in its dtype
    (bfloat16: about 1.5-2x faster on CPUs with AVX512-BF16).

    Args:
        layers: `build_encoder()` or `build_decoder()` (any Sequential of convolutions, ReLUs, ResBlocks).
        x: [B, C, H, W] float input.
        chunk_size: masks per pass, >= 1 (results do not depend on it).

    Returns:
        [B, C', H', W'] float.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    with torch.no_grad():
        chunks = [_run_layers(layers, chunk) for chunk in x.split(chunk_size)]
    return chunks[0] if len(chunks) == 1 else torch.cat(chunks)


def _run_layers(layers: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """One chunk through `layers` (see `run_inference`), channels-last, ReLUs in place."""
    x = x.contiguous(memory_format=torch.channels_last)
    last = len(layers) - 1
    for i, layer in enumerate(layers):
        if isinstance(layer, nn.ReLU):
            x = torch.relu_(x)
        elif i == last and _is_channel_projection(layer):
            weight, bias = layer.weight.reshape(1, -1).T.to(x.dtype), layer.bias.to(x.dtype)  # [C, 1], [1]
            x = (x.permute(0, 2, 3, 1) @ weight + bias).permute(0, 3, 1, 2)
        else:
            x = layer(x)
    return x


def _is_channel_projection(layer: nn.Module) -> bool:
    """A 1x1, stride-1, unpadded convolution to a single channel."""
    return (
        isinstance(layer, nn.Conv2d) and layer.out_channels == 1 and layer.kernel_size == (1, 1)
        and layer.stride == (1, 1) and layer.padding == (0, 0) and layer.groups == 1 and layer.bias is not None
    )  # fmt: skip


class EMAQuantizer(nn.Module):
    """Nearest-neighbour codebook whose entries move by exponential moving average, not by gradients.

    Buffers (all saved with the model so training can resume):
        codebook: [K, D] float32, the code vectors.
        ema_cluster_size: [K] float32, EMA of how many latents each code received per update.
        ema_w: [K, D] float32, EMA of the sum of latents each code received.
        steps_unused: [K] int64, updates since each code last received a latent (for restarts).
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, decay: float, epsilon: float) -> None:
        super().__init__()
        self.decay = decay
        self.epsilon = epsilon
        codebook = torch.randn(num_embeddings, embedding_dim)
        self.register_buffer("codebook", codebook)
        # Starting every cluster at size 1 with ema_w = codebook keeps codebook = ema_w / size stable
        # for codes that receive nothing (a zero start divides by ~epsilon and blows them up).
        self.register_buffer("ema_cluster_size", torch.ones(num_embeddings))
        self.register_buffer("ema_w", codebook.clone())
        self.register_buffer("steps_unused", torch.zeros(num_embeddings, dtype=torch.long))

    def nearest(self, latents: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code (squared L2) for each latent: [N, D] -> [N] int64 in 0..K-1."""
        # Expanded form, as big_vision computes it, so ties and rounding behave like the reference.
        distances = latents.pow(2).sum(1, keepdim=True) + self.codebook.pow(2).sum(1) - 2 * latents @ self.codebook.T
        return distances.argmin(1)

    @torch.no_grad()
    def ema_update(self, latents: torch.Tensor, indices: torch.Tensor) -> None:
        """Move each used code towards the mean of the latents assigned to it.

        Args:
            latents: [N, D] float, encoder outputs (no gradient needed).
            indices: [N] int64 in 0..K-1, the code each latent was assigned to.
        """
        num_codes = self.codebook.shape[0]
        one_hot = F.one_hot(indices, num_codes).to(latents.dtype)
        counts = one_hot.sum(0)
        self.ema_cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.ema_w.mul_(self.decay).add_(one_hot.T @ latents, alpha=1 - self.decay)
        # Laplace smoothing keeps rarely used codes away from a division by ~0 (Sonnet's VQ-VAE EMA).
        total = self.ema_cluster_size.sum()
        smoothed = (self.ema_cluster_size + self.epsilon) / (total + num_codes * self.epsilon) * total
        self.codebook.copy_(self.ema_w / smoothed[:, None])
        self.steps_unused.add_(1).masked_fill_(counts > 0, 0)

    @torch.no_grad()
    def restart_dead_codes(
        self, latents: torch.Tensor, max_unused_steps: int, generator: torch.Generator | None = None
    ) -> int:
        """Re-initialise codes unused for `max_unused_steps` updates from random latents.

        Args:
            latents: [N, D] float, recent encoder outputs to draw new codes from.
            max_unused_steps: a code unused for at least this many `ema_update` calls is restarted.
            generator: optional CPU generator, for reproducible draws.

        Returns:
            How many codes were restarted.
        """
        dead = (self.steps_unused >= max_unused_steps).nonzero().squeeze(1)
        if dead.numel() == 0 or latents.shape[0] == 0:
            return 0
        if latents.shape[0] >= dead.numel():  # distinct latents when there are enough
            picks = torch.randperm(latents.shape[0], generator=generator)[: dead.numel()]
        else:
            picks = torch.randint(latents.shape[0], (dead.numel(),), generator=generator)
        fresh = latents[picks.to(latents.device)].to(self.codebook.dtype)
        self.codebook[dead] = fresh
        self.ema_w[dead] = fresh
        self.ema_cluster_size[dead] = 1.0
        self.steps_unused[dead] = 0
        return int(dead.numel())


@dataclass
class VQVAEOutput:
    """What `MaskVQVAE.forward` returns for one training batch of B masks.

    Attributes:
        reconstruction: [B, 64, 64] float32, decoder output, target is `2 * mask - 1` in [-1, 1].
        loss: scalar, `reconstruction_loss + commitment_loss`, the value to backpropagate.
        reconstruction_loss: scalar, MSE between reconstruction and the [-1, 1] target.
        commitment_loss: scalar, `commitment_cost * MSE(latents, stop_gradient(codes))`.
        indices: [B, 16] int64 in 0..K-1, row-major over the 4x4 grid.
        latents: [B, 16, D] float32, detached encoder outputs (feed them to `ema_update`).
    """

    reconstruction: torch.Tensor
    loss: torch.Tensor
    reconstruction_loss: torch.Tensor
    commitment_loss: torch.Tensor
    indices: torch.Tensor
    latents: torch.Tensor


class MaskVQVAE(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="chexanatomy",
    repo_url=REPO_URL,
    paper_url=CODEC_PAPER_URL,
    tags=["chexanatomy", "paligemma", "vq-vae", "mask-tokenizer", "image-segmentation"],
):
    """The PaliGemma `vae-oid` mask codec, with an EMA codebook for training.

    Masks are 64x64 crops in [0, 1] (1 = inside); the network sees `2 * mask - 1`. Codes are numbered
    row-major over the 4x4 grid (index `4 * row + col`), as big_vision reshapes an NHWC [B, 4, 4, D]
    grid. `save_pretrained`/`from_pretrained` store the constructor arguments in `config.json` and
    every parameter and buffer (EMA state included) in `model.safetensors`.

    Args:
        num_embeddings: codebook size K; 128 for PaliGemma's `<seg000>`..`<seg127>` vocabulary.
        embedding_dim: code vector size D (512 in `vae-oid`).
        commitment_cost: weight of the commitment loss (0.25 in the original trainer).
        decay: EMA decay of the codebook (0.99 in the original trainer).
        epsilon: Laplace smoothing of the EMA cluster sizes.
    """

    def __init__(
        self,
        num_embeddings: int = NUM_SEG,
        embedding_dim: int = 512,
        commitment_cost: float = 0.25,
        decay: float = 0.99,
        epsilon: float = 1e-5,
    ) -> None:
        super().__init__()
        if num_embeddings < 1 or embedding_dim < 1:
            raise ValueError(f"num_embeddings and embedding_dim must be >= 1, got {num_embeddings}, {embedding_dim}")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.commitment_cost = commitment_cost
        self.encoder = build_encoder(embedding_dim)
        self.quantizer = EMAQuantizer(num_embeddings, embedding_dim, decay, epsilon)
        self.decoder = build_decoder(embedding_dim)

    @property
    def num_embeddings(self) -> int:
        """Codebook size K."""
        return self.quantizer.codebook.shape[0]

    @property
    def device(self) -> torch.device:
        """Device of the parameters."""
        return self.quantizer.codebook.device

    def encode_latents(self, masks: torch.Tensor) -> torch.Tensor:
        """Encoder outputs before quantisation.

        Args:
            masks: [B, 64, 64] float in [0, 1] (soft masks allowed), any device.

        Returns:
            [B, 16, D] float32, the 4x4 grid flattened row-major.
        """
        _check_masks(masks)
        x = 2.0 * masks.to(self.device, torch.float32)[:, None] - 1.0
        grid = self.encoder(x)  # [B, D, 4, 4]
        return grid.permute(0, 2, 3, 1).reshape(grid.shape[0], CODES_PER_MASK, -1)

    def decode_latents(self, codes: torch.Tensor) -> torch.Tensor:
        """Decoder: [B, 16, D] code vectors (row-major grid) -> [B, 64, 64] float32, roughly [-1, 1]."""
        batch = codes.shape[0]
        grid = codes.reshape(batch, GRID_SIZE, GRID_SIZE, -1).permute(0, 3, 1, 2)
        return self.decoder(grid)[:, 0]

    @torch.no_grad()
    def encode_indices(self, masks: torch.Tensor) -> torch.Tensor:
        """Code indices of masks: [B, 64, 64] float in [0, 1] -> [B, 16] int64 in 0..K-1 (row-major).

        Runs the encoder's inference path (`run_inference`): the same codes as `encode_latents` + `nearest`.
        """
        _check_masks(masks)
        x = 2.0 * masks.to(self.device, torch.float32)[:, None] - 1.0
        grid = run_inference(self.encoder, x)  # [B, D, 4, 4]
        latents = grid.permute(0, 2, 3, 1).reshape(-1, grid.shape[1])
        return self.quantizer.nearest(latents).reshape(-1, CODES_PER_MASK)

    def decode_distributions(self, probabilities: torch.Tensor) -> torch.Tensor:
        """Masks from a distribution over the codes of each cell: [B, 16, K] -> [B, 64, 64] float32, roughly [-1, 1].

        Each cell's code vector is the expected one, ``probabilities @ codebook``; one-hot rows give
        ``decode_indices``' maps. Differentiable in ``probabilities`` (``train.seg_shape`` trains through it); rows
        should sum to 1. Raises ValueError on a wrong shape.
        """
        if probabilities.ndim != 3 or probabilities.shape[1:] != (CODES_PER_MASK, self.num_embeddings):
            raise ValueError(
                f"probabilities must be [B, {CODES_PER_MASK}, {self.num_embeddings}], got {tuple(probabilities.shape)}"
            )
        return self.decode_latents(probabilities.float() @ self.quantizer.codebook.float()).float()

    @torch.no_grad()
    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Masks from code indices: [B, 16] int in 0..K-1 -> [B, 64, 64] float32, roughly [-1, 1].

        Threshold at > 0 for the binary mask. Raises ValueError on a wrong shape or out-of-range index
        (`mask_tokens.decode` validates model text before it gets here).
        """
        if indices.ndim != 2 or indices.shape[1] != CODES_PER_MASK:
            raise ValueError(f"indices must be [B, {CODES_PER_MASK}], got {tuple(indices.shape)}")
        if indices.numel() and (indices.min() < 0 or indices.max() >= self.num_embeddings):
            raise ValueError(f"indices must be in 0..{self.num_embeddings - 1}, got {indices.min()}..{indices.max()}")
        codes = self.quantizer.codebook[indices.to(self.device, torch.long)]
        grid = codes.reshape(-1, GRID_SIZE, GRID_SIZE, codes.shape[-1]).permute(0, 3, 1, 2)
        return run_inference(self.decoder, grid)[:, 0].float()

    def forward(self, masks: torch.Tensor) -> VQVAEOutput:
        """Training pass: reconstruct masks through the quantiser with a straight-through gradient.

        The codebook is not changed here; call `ema_update(out.latents, out.indices)` after the
        optimiser step (and `restart_dead_codes` now and then).

        Args:
            masks: [B, 64, 64] float in [0, 1].

        Returns:
            A `VQVAEOutput`.
        """
        latents = self.encode_latents(masks)
        flat = latents.reshape(-1, latents.shape[-1])
        indices = self.quantizer.nearest(flat.detach())
        codes = self.quantizer.codebook[indices].reshape(latents.shape)
        commitment = self.commitment_cost * F.mse_loss(latents, codes)  # codes is a buffer: no grad
        straight_through = latents + (codes - latents).detach()
        reconstruction = self.decode_latents(straight_through)
        target = 2.0 * masks.to(self.device, torch.float32) - 1.0
        reconstruction_loss = F.mse_loss(reconstruction, target)
        return VQVAEOutput(
            reconstruction=reconstruction,
            loss=reconstruction_loss + commitment,
            reconstruction_loss=reconstruction_loss,
            commitment_loss=commitment,
            indices=indices.reshape(-1, CODES_PER_MASK),
            latents=latents.detach(),
        )

    def ema_update(self, latents: torch.Tensor, indices: torch.Tensor) -> None:
        """EMA codebook step (decay `decay`) from one batch.

        Args:
            latents: [B, 16, D] or [N, D] float, detached encoder outputs (`VQVAEOutput.latents`).
            indices: [B, 16] or [N] int64 in 0..K-1, their assigned codes (`VQVAEOutput.indices`).
        """
        dim = self.quantizer.codebook.shape[1]
        self.quantizer.ema_update(latents.reshape(-1, dim).to(self.device), indices.reshape(-1).to(self.device))

    def restart_dead_codes(
        self, latents: torch.Tensor, max_unused_steps: int, generator: torch.Generator | None = None
    ) -> int:
        """Re-initialise codes unused for `max_unused_steps` EMA updates from random rows of `latents`.

        Args:
            latents: [B, 16, D] or [N, D] float, recent encoder outputs.
            max_unused_steps: threshold in `ema_update` calls.
            generator: optional CPU generator.

        Returns:
            How many codes were restarted.
        """
        dim = self.quantizer.codebook.shape[1]
        return self.quantizer.restart_dead_codes(latents.reshape(-1, dim).to(self.device), max_unused_steps, generator)


def _check_masks(masks: torch.Tensor) -> None:
    """Raise ValueError unless masks is a [B, 64, 64] tensor."""
    if not isinstance(masks, torch.Tensor) or masks.ndim != 3 or tuple(masks.shape[1:]) != (MASK_SIZE, MASK_SIZE):
        shape = tuple(masks.shape) if hasattr(masks, "shape") else type(masks).__name__
        raise ValueError(f"masks must be a torch.Tensor [B, {MASK_SIZE}, {MASK_SIZE}] in [0, 1], got {shape}")
