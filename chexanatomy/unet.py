"""The U-Net baseline's network: one sigmoid channel per structure (structures overlap in a radiograph).

The class lives in the core so that evaluation and the Space load a trained U-Net without importing training
code; ``train/unet.py`` trains it. ``segmentation-models-pytorch`` supplies the network (no pretrained encoder
weights: nothing is downloaded) and saves it in its own Hub format, so a user without this project loads it with

    import segmentation_models_pytorch as smp
    net = smp.from_pretrained("chexanatomy/unet-anatomy")      # or a local folder; an ``smp.Unet``
    structures = net.config["_structures"]                      # channel order; inputs [B, 1, S, S] in [0, 1]

The folder is ``config.json`` (smp's constructor arguments, ``_model_class: "Unet"``, and our two entries
``_structures`` and ``_input_size``: smp hands every key to the constructor except those starting with ``_``) and
``model.safetensors`` (smp's parameter names). ``AnatomyUNet`` wraps that network with the structure names and the
input size; it also reads the folders saved before this format (``structures``/``size``/``encoder`` in
``config.json``, parameters prefixed ``net.``).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file

from .locate import locate_model
from .masks import grey_levels

DEFAULT_DECODER_CHANNELS = (256, 128, 64, 32, 16)  # smp's default U-Net decoder widths, deepest stage first


class AnatomyUNet(torch.nn.Module):
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
        # `_structures`/`_input_size` are recorded in smp's config (its Hub mixin keeps every argument) and
        # filtered out before smp's constructor sees them (`supports_config_loading` drops keys starting with "_").
        self.net = smp.Unet(
            encoder_name=encoder, encoder_weights=None, in_channels=1, classes=len(self.structures),
            decoder_channels=tuple(decoder_channels), _structures=self.structures, _input_size=size,
        )  # fmt: skip

    @property
    def config(self) -> dict:
        """The ``config.json`` this U-Net is saved with (smp's, plus ``_structures`` and ``_input_size``)."""
        return {**self.net.config, "_model_class": type(self.net).__name__}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits [B, C, S, S] of images [B, 1, S, S] in [0, 1]."""
        return self.net(images)

    def save_pretrained(self, save_directory: str | Path) -> Path:
        """Save ``config.json`` and ``model.safetensors`` in smp's format (``smp.from_pretrained`` loads them).

        A ``README.md`` already in the folder is kept; none is added (smp's generic card would say MIT and no
        structures: ``python -m model_card`` writes the card).
        """
        folder = Path(save_directory)
        had_card = (folder / "README.md").exists()
        self.net.save_pretrained(folder)
        if not had_card:
            (folder / "README.md").unlink(missing_ok=True)
        return folder

    def push_to_hub(self, repo_id: str, commit_message: str = "CheXanatomy U-Net", **kwargs) -> str:
        """Upload the saved files (see ``save_pretrained``) to the Hub model repository ``repo_id``; its URL.

        Args:
            repo_id: ``owner/name``; created when missing.
            commit_message: the Hub commit's message.
            kwargs: passed to ``huggingface_hub.create_repo`` (``private``, ``token``).
        """
        from huggingface_hub import HfApi

        api = HfApi(token=kwargs.get("token"))
        api.create_repo(repo_id, exist_ok=True, **kwargs)
        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder)
            return str(api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=commit_message))

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, size: int | None = None) -> AnatomyUNet:
        """The U-Net saved in a folder or Hub repository, in smp's format or the earlier one (see the module).

        Args:
            name_or_path: a local folder or a Hub id (``chexanatomy.locate`` rules).
            size: another input side than the saved one (the network is fully convolutional).

        Raises:
            FileNotFoundError: naming the path, when there is no U-Net there.
            ValueError: when ``config.json`` is not a U-Net's.
        """
        path = locate_model(name_or_path)
        saved = unet_settings(json.loads((path / "config.json").read_text(encoding="utf-8")))
        if saved is None:
            raise ValueError(f"{path}/config.json is not a CheXanatomy U-Net's (no _structures, no structures)")
        model = cls(saved["structures"], size or saved["size"], saved["encoder"], tuple(saved["decoder_channels"]))
        state = load_file(path / "model.safetensors")
        if saved["legacy"]:
            state = {k.removeprefix("net."): v for k, v in state.items()}
        model.net.load_state_dict(state)
        return model.eval()

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


def unet_settings(config: dict) -> dict | None:
    """The settings of a U-Net ``config.json`` (as a dict), in smp's format or the earlier one.

    Returns:
        ``structures``, ``size``, ``encoder``, ``decoder_channels`` and ``legacy`` (True for the earlier format,
        whose parameters are prefixed ``net.``); None when ``config`` is no CheXanatomy U-Net's.
    """
    if config.get("_model_class") == "Unet" and "_structures" in config:
        keys = ("_structures", "_input_size", "encoder_name", "decoder_channels")
        legacy = False
    elif "structures" in config and "encoder" in config:
        keys = ("structures", "size", "encoder", "decoder_channels")
        legacy = True
    else:
        return None
    names = ("structures", "size", "encoder", "decoder_channels")
    defaults = {"decoder_channels": list(DEFAULT_DECODER_CHANNELS), "size": 256}
    settings = {n: config.get(k, defaults.get(n)) for n, k in zip(names, keys, strict=True)}
    return {**settings, "legacy": legacy}
