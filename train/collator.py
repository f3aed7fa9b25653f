"""The PaliGemma training collator: corpus rows -> prompts + answers -> model inputs with the right masks.

TRL's built-in vision collator is wrong for PaliGemma (docs/environment.md): it gives every token
``token_type_ids = 0``, so the answer is visible to the bidirectional prefix attention and image and prompt end up in
the loss. This collator calls ``PaliGemmaProcessor(text=prompts, images=images, suffix=answers)``, which marks the
answer (and its ``<eos>``) with ``token_type_ids = 1`` and puts only those positions in ``labels``.

Each sample is one image with several structures *packed* into one answer (``segment a ; b ; c`` ->
``<loc>..<seg>.. a ; <loc>..<seg>.. b ; ...``): 20 structures per sequence trained 15x more structures per second
than one (docs/anchors.md). Prompts use the display name or a synonym at random; the answer repeats the prompt's name.
The radiograph augmentation (``train.augment``: zoom, rotation, shift, clinical processing, collimation, markers,
blur, noise) moves the masks with the image; the boxes change, so the masks are re-tokenised with the codec.

A row holds about 95 structures and an answer names a few, so each structure is answered rarely. With
``area_power`` > 0 the draw favours large structures (weight = projected area fraction ** ``area_power``): the ones
the evaluation scores (>= 1 % of the image; the lung fields on real radiographs) are answered more often, the small
ones still now and then.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from chexanatomy.anatomy import STRUCTURES, tokenisable
from chexanatomy.finetune import suffix_batch
from chexanatomy.mask_tokens import MaskTokenizer, format_detect_target, tight_boxes
from chexanatomy.masks import grey_levels

from .augment import RadiographAugmentation, augment_radiograph


def _as_pil(mask) -> Image.Image:
    """A mask as PIL, whether ``datasets`` decoded it or left it as ``{"bytes": ...}``."""
    if isinstance(mask, Image.Image):
        return mask
    import io

    return Image.open(io.BytesIO(mask["bytes"]))


def lazy_masks(dataset):
    """``dataset`` with structure masks left as PNG bytes.

    Rows then decode in microseconds; the collator decodes only the masks a sample uses (a row holds ~95).
    """
    import datasets

    features = dataset.features.copy()
    features["structures"] = datasets.List({**features["structures"].feature, "mask": datasets.Image(decode=False)})
    return dataset.cast(features)


@dataclass
class Sample:
    """One training example before tokenisation: an RGB image, a prompt and its answer."""

    image: Image.Image
    prompt: str
    answer: str


def _answer_with_name(target: str, name: str) -> str:
    """Replace the name at the end of a stored target (``<loc>...<seg>... left lung``) by ``name``."""
    return target[: target.rindex(">") + 1] + " " + name


@dataclass
class AnatomyCollator:
    """Collate corpus rows for ``SFTTrainer``.

    Args:
        processor: a ``PaliGemmaProcessor``.
        tokenizer: the mask tokenizer (codec) used to re-tokenise augmented masks; None disables augmentation.
        structures_per_sample: maximum structures packed into one answer (each sample draws 1..maximum).
        detect_fraction: probability that a sample is a ``detect`` task (boxes only) instead of ``segment``.
        synonym_fraction: probability of prompting a structure by a synonym instead of its display name.
        augment_fraction: probability of the radiograph augmentation (``train.augment.augment_radiograph``).
        augmentation: its ranges (zoom, rotation, shift, style; ``train.augment.RadiographAugmentation``).
        area_power: structures are drawn with weight (area fraction of the image) ** ``area_power``, without
            replacement; 0 draws uniformly, 0.5 makes a lung (~12 % of the image) about 3.5x as likely as a 1 %
            structure. Needs the corpus's ``area_px``.
        seed: seed of the collator's own random draws.
    """

    processor: object
    tokenizer: MaskTokenizer | None = None
    structures_per_sample: int = 20
    detect_fraction: float = 0.2
    synonym_fraction: float = 0.3
    augment_fraction: float = 0.5
    augmentation: RadiographAugmentation = field(default_factory=RadiographAugmentation)
    area_power: float = 0.0
    seed: int = 0
    rng: random.Random = field(init=False, repr=False)

    def __post_init__(self):
        if not (self.area_power >= 0 and math.isfinite(self.area_power)):
            raise ValueError(f"area_power must be a finite number >= 0, got {self.area_power}")
        self.rng = random.Random(self.seed)

    def draw_structures(self, usable: list[dict], count: int, image_px: int) -> list[dict]:
        """``count`` of ``usable`` without replacement, weighted by area fraction ** ``area_power`` (module docstring).

        Weighted sampling by Efraimidis-Spirakis keys (u ** (1 / w), the largest ``count`` kept), so equal weights
        reduce to a uniform draw. ``image_px`` is the image's pixel count; ``area_px`` is each structure's mask area.
        """
        if self.area_power == 0:
            return self.rng.sample(usable, count)
        missing = [s["name"] for s in usable if s.get("area_px") is None]
        if missing:
            raise ValueError(f"area_power > 0 needs the corpus's area_px; {missing[0]} has none (rebuild the corpus)")
        keys = [self.rng.random() ** (1 / max(s["area_px"] / image_px, 1e-6) ** self.area_power) for s in usable]
        order = sorted(range(len(usable)), key=keys.__getitem__, reverse=True)
        return [usable[i] for i in order[:count]]

    def prompt_name(self, name: str) -> str:
        """The name a prompt uses for structure ``name``.

        Returns a random one of its synonyms with probability ``synonym_fraction`` (when it has any), else its
        display name. Draws from the collator's ``rng``.
        """
        s = STRUCTURES[name]
        if s.synonyms and self.rng.random() < self.synonym_fraction:
            return self.rng.choice(s.synonyms)
        return s.display

    def _augment(self, image: Image.Image, structures: list[dict]) -> tuple[Image.Image, list[dict]]:
        """Radiograph augmentation (``train.augment``) of the image and the chosen masks; masks move with it.

        Masks that leave the image are dropped; the kept ones lose their stored targets (re-tokenised by the caller).
        """
        x = torch.from_numpy(grey_levels(image))[None]
        masks = torch.from_numpy(np.stack([np.asarray(s["mask"], dtype=np.float32) for s in structures]))
        x, masks = augment_radiograph(x, masks, self.rng, self.augmentation)
        canvas = Image.fromarray((x[0] * 255 + 0.5).to(torch.uint8).numpy(), mode="L").convert(image.mode)
        moved = [
            {**s, "mask": Image.fromarray(m.numpy() > 0.5), "segment_target": None, "detect_target": None}
            for s, m in zip(structures, masks, strict=True)  # one mask per structure
            if bool(m.any())
        ]
        return canvas, moved

    def _retokenise(self, structures: list[dict], hw: tuple[int, int]) -> list[dict]:
        masks = np.stack([np.asarray(s["mask"], dtype=bool) for s in structures])
        boxes = tight_boxes(masks)
        single = [i for i, s in enumerate(structures) if tokenisable(s["name"])]
        names = [structures[i]["name"] for i in single]
        seg = self.tokenizer.encode(masks[single], names, boxes=boxes[single]) if single else []
        seg_by_index = dict(zip(single, seg, strict=True))  # encode returns one target per mask
        return [
            {**s, "segment_target": seg_by_index.get(i), "detect_target": format_detect_target(boxes[i], hw, s["name"])}
            for i, s in enumerate(structures)
        ]

    def make_sample(self, row: dict) -> Sample:
        """Choose task, structures and names for one corpus row; returns the text pair and the image.

        Masks may arrive undecoded (``{"bytes": ...}``, see ``lazy_masks``): only the chosen ones are decoded.
        """
        image = row["image"]
        task = "detect" if self.rng.random() < self.detect_fraction else "segment"
        key = f"{task}_target"
        usable = [s for s in row["structures"] if s.get(key)]
        if not usable:  # e.g. only multipart structures: fall back to boxes
            task, key, usable = "detect", "detect_target", [s for s in row["structures"] if s.get("detect_target")]
        # Between one and `structures_per_sample` structures, so the model also answers short prompts.
        count = self.rng.randint(1, min(self.structures_per_sample, len(usable)))
        chosen = self.draw_structures(usable, count, image.size[0] * image.size[1])
        if self.tokenizer is not None and self.rng.random() < self.augment_fraction:
            shrunk, moved = self._augment(image, [{**s, "mask": _as_pil(s["mask"])} for s in chosen])
            if moved:
                moved = [s for s in self._retokenise(moved, (shrunk.size[1], shrunk.size[0])) if s.get(key)]
            if moved:  # (if every chosen mask left the image, the sample stays unaugmented)
                image, chosen = shrunk, moved
        names = [self.prompt_name(s["name"]) for s in chosen]
        answer = " ; ".join(_answer_with_name(s[key], n) for s, n in zip(chosen, names, strict=True))
        return Sample(image.convert("RGB"), f"{task} " + " ; ".join(names), answer)

    def __call__(self, rows: list[dict]) -> dict:
        """Collate a batch of corpus rows into PaliGemma inputs.

        Returns the processor's ``BatchFeature`` of ``[B, L]`` tensors padded to the longest sequence:
        ``input_ids``, ``attention_mask``, ``token_type_ids`` (1 on the answer and its ``<eos>``) and ``labels``
        (-100 except on answer positions), plus ``pixel_values`` ``[B, 3, H, W]``.
        """
        samples = [self.make_sample(r) for r in rows]
        return suffix_batch(self.processor, [s.prompt for s in samples], [s.image for s in samples],
                            [s.answer for s in samples])  # fmt: skip
