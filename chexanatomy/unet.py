"""The U-Net baseline's network: one sigmoid channel per structure (structures overlap in a radiograph).

The class lives in the core so that evaluation and the Space load a trained U-Net without importing training
code; ``train/unet.py`` trains it. ``segmentation-models-pytorch`` supplies the network (no pretrained encoder
weights: nothing is downloaded) and ``PyTorchModelHubMixin`` gives ``save_pretrained``/``from_pretrained``/
``push_to_hub`` (``config.json`` holds ``structures``, ``size`` and ``encoder``).
"""

from __future__ import annotations

import numpy as np
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from PIL import Image

from .masks import grey_levels

DEFAULT_DECODER_CHANNELS = (256, 128, 64, 32, 16)  # smp's default U-Net decoder widths, deepest stage first


class AnatomyUNet(
    torch.nn.Module,
    PyTorchModelHubMixin,
    library_name="chexanatomy",
    tags=["chexanatomy", "chest-x-ray", "anatomy", "image-segmentation", "unet"],
):
    """U-Net over a grey radiograph [B, 1, S, S] in [0, 1] -> logits [B, C, S, S], one channel per structure.

    Args:
        structures: the C structure names, channel order.
        size: input side in pixels (images are resized to it; masks come back at the original size).
        encoder: an smp encoder name, randomly initialised.
        decoder_channels: the decoder's widths, deepest stage first (smp's default 256..16). Narrower stages
            make a high-resolution U-Net cheaper on CPU; the last one runs at full resolution.
    """

    def __init__(
        self,
        structures: list[str],
        size: int = 256,
        encoder: str = "resnet18",
        decoder_channels: tuple[int, ...] = DEFAULT_DECODER_CHANNELS,
    ):
        super().__init__()
        self.structures, self.size = list(structures), size
        self.net = smp.Unet(
            encoder_name=encoder, encoder_weights=None, in_channels=1, classes=len(self.structures),
            decoder_channels=tuple(decoder_channels),
        )  # fmt: skip

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits [B, C, S, S] of images [B, 1, S, S] in [0, 1]."""
        return self.net(images)

    @torch.no_grad()
    def segment_masks(
        self, image: Image.Image | np.ndarray, structures: list[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Masks of ``structures`` (default all) as bool [H, W] at the image's own size (sigmoid > 0.5).

        Args:
            image: a grey radiograph, PIL (any mode) or an array [H, W], read by ``chexanatomy.masks.grey_levels``
                (uint8 0..255, float 0..1 kept, 16-bit min-max scaled), frontal views in radiological convention
                (patient's right on the image left).
            structures: vocabulary names (patient sides: ``lung_left`` is the patient's left lung).

        Raises:
            KeyError: naming the structures this U-Net was not trained on.
        """
        names = list(structures or self.structures)
        unknown = [n for n in names if n not in self.structures]
        if unknown:
            raise KeyError(f"this U-Net was not trained on {unknown}")
        grey = grey_levels(image)
        h, w = grey.shape
        x = F.interpolate(
            torch.from_numpy(grey)[None, None], size=(self.size, self.size), mode="bilinear", antialias=True
        )
        device = next(self.parameters()).device
        logits = F.interpolate(self(x.to(device)).float().cpu(), size=(h, w), mode="bilinear")[0]
        return {n: (logits[self.structures.index(n)] > 0).numpy() for n in names}
