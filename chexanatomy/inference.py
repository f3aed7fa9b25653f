"""One inference interface for every model: ``segment(image, structures) -> {name: Prediction}``.

    from chexanatomy.inference import load_segmenter
    segmenter = load_segmenter("outputs/tiny_vlm")          # a VLM folder (full or LoRA adapter), a U-Net, or a Hub id
    predictions = segmenter.segment(image, ["heart", "lung_left"])
    predictions["lung_left"].mask                           # bool [H, W] at the image's own size

Conventions shared by both model kinds:
    * input: a radiograph as PIL (any mode) or an array [H, W]; frontal views in radiological convention
      (the patient's right on the image left). Colour, 16-bit and alpha inputs are reduced to grey ("L").
    * structure names: vocabulary ids (``chexanatomy.anatomy.STRUCTURES``), sides are the patient's
      (``lung_left`` is the patient's left lung, on the image right of a PA view).
    * output masks: bool [H, W] at the input's resolution; boxes (y0, x0, y1, x1) integer pixel edges, y0/x0
      inclusive, y1/x1 exclusive (``chexanatomy.mask_tokens``).

For the VLM, all requested structures of one image are answered by one batched ``generate`` call that runs the
vision tower once: the image features are computed once and handed to every prompt of the batch through
transformers' ``mm_encoder_outputs`` (instead of re-encoding the same pixels once per prompt). Decoding is greedy,
or a beam search when the model folder's ``generation_config.json`` sets ``num_beams`` (or ``VLMSegmenter`` is
given it; the contract follows every beam). Answers are decoded with the model's own codec (``mask_codec/`` in its
folder, else the bundled default). An answer that breaks the token contract is returned with ``valid=False`` and
an empty mask, never raised; generation is constrained to the contract by default (``chexanatomy.answer_contract``),
so that happens only with ``constrained=False``.
"""

from __future__ import annotations

import inspect
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image

from .anatomy import STRUCTURES, get_structure, tokenisable
from .answer_contract import LOC_DECODINGS, AnswerContract, consecutive_ids
from .locate import (  # noqa: F401 (BUNDLED_MODELS, BUNDLED_MODELS_DIR, bundled_model_path: re-exported)
    BUNDLED_MODELS,
    BUNDLED_MODELS_DIR,
    SEGMENTER_MARKERS,
    bundled_model_path,
    locate_model,
    model_source,
    resolve_device,
)
from .mask_tokens import CODES_PER_MASK, NUM_SEG, MaskTokenizer, decode_detections, paste_mask
from .masks import as_grey, tight_box

VLM_TASKS = ("segment", "detect")
SEG_DECODINGS = ("argmax", "expected")  # VLMSegmenter(seg_decoding=...): how the 16 <seg> slots become a mask


@dataclass(eq=False)  # `==` on the mask array would be ambiguous
class Prediction:
    """One structure's answer.

    Attributes:
        name: the vocabulary id that was asked for.
        mask: bool [H, W] at the input image's resolution (all False when invalid).
        box: (y0, x0, y1, x1) integer pixel edges, or None when the mask is empty or the answer invalid.
        valid: False when the model's answer broke the token contract (always True for the U-Net).
        answer: the model's raw text for this structure ("" for the U-Net).
    """

    name: str
    mask: np.ndarray = field(repr=False)
    box: tuple[int, int, int, int] | None
    valid: bool = True
    answer: str = ""

    @property
    def area_px(self) -> int:
        """Number of mask pixels."""
        return int(self.mask.sum())


class Segmenter(Protocol):
    """What evaluation and the Space need from a model."""

    kind: str
    structures: list[str]

    def segment(self, image: Image.Image | np.ndarray, structures: list[str] | None = None) -> dict[str, Prediction]:
        """Predictions for ``structures`` (default: every structure the model knows), keyed by name."""
        ...


def grey_image(image: Image.Image | np.ndarray) -> Image.Image:
    """A PIL "L" image of ``image`` (PIL of any mode or an array), by ``chexanatomy.masks.as_grey``'s rule.

    Colour is BT.601 luma; 16-bit, integer and out-of-range float inputs are min-max scaled (an "I;16" radiograph
    would otherwise clip to white).

    Raises:
        ValueError: for arrays that are not 2-D or 3-D with 1, 3 or 4 channels, or images smaller than 2x2.
    """
    grey = image if isinstance(image, Image.Image) and image.mode == "L" else Image.fromarray(as_grey(image))
    if min(grey.size) < 2:
        raise ValueError(f"the image is {grey.size[0]}x{grey.size[1]} pixels: too small to segment")
    return grey


def resolve_names(names: list[str] | None, known: list[str]) -> list[str]:
    """Vocabulary ids for names given as ids, display names or synonyms; default ``known``; order kept, no repeats.

    Raises:
        KeyError: for names outside the vocabulary (with the closest names) or outside ``known``.
    """
    if not names:
        return list(known)
    resolved = list(dict.fromkeys(get_structure(n).name for n in names))
    missing = [n for n in resolved if n not in known]
    if missing:
        raise KeyError(f"this model does not segment {missing}")
    return resolved


# --------------------------------------------------------------------------------------------------
# U-Net
# --------------------------------------------------------------------------------------------------


class UNetSegmenter:
    """``segment`` for an ``AnatomyUNet`` (sigmoid > 0.5 per channel)."""

    kind = "unet"

    def __init__(self, model):
        self.model = model.eval()
        self.structures = list(model.structures)

    def segment(self, image: Image.Image | np.ndarray, structures: list[str] | None = None) -> dict[str, Prediction]:
        """See ``Segmenter.segment``."""
        names = resolve_names(structures, self.structures)
        masks = self.model.segment_masks(grey_image(image), names)
        return {n: Prediction(n, masks[n], tight_box(masks[n])) for n in names}


# --------------------------------------------------------------------------------------------------
# Vision-language model
# --------------------------------------------------------------------------------------------------


def default_vlm_structures() -> list[str]:
    """Structures a VLM is asked for by default: the vocabulary minus the multipart ones (detect targets only)."""
    return [name for name in STRUCTURES if tokenisable(name)]


class VLMSegmenter:
    """``segment``/``detect`` for a PaliGemma-architecture model trained on the anatomy targets.

    Args:
        model: a ``PaliGemmaForConditionalGeneration`` (or a ``PeftModel`` around one), eval mode.
        processor: its ``PaliGemmaProcessor``.
        tokenizer: the ``MaskTokenizer`` whose codec made the training targets.
        structures: what ``segment`` asks for by default.
        batch_size: prompts per ``generate`` call (all structures of an image share the image features).
        max_new_tokens: answer length cap for unconstrained generation; one object is 4 + 16 + name tokens.
        constrained: generate through ``chexanatomy.answer_contract.AnswerContract`` (default): every answer is
            inside the token contract by construction, and long enough to finish. False gives the model's raw
            answers (to measure how often they break the contract).
        num_beams: beam search over this many answers per prompt (``generate(num_beams=...)``); 1: greedy; None
            (default): what the model folder's ``generation_config.json`` says, as ``generate`` would for a user
            of ``transformers`` alone (1 if it says nothing). The answer with the highest total log-probability
            wins, so a box is chosen together with its 16 codes, not one token at a time; it costs about
            ``num_beams`` x the decoding time.
        loc_decoding: how a constrained answer's ``<loc>`` tokens are chosen (``AnswerContract``): "median"
            (default) of the model's distribution over the allowed bins, or "generate" (greedy or beam, as the
            other tokens). Unconstrained answers are always the model's own.
        seg_decoding: how a ``segment`` answer's 16 ``<seg>`` slots become its mask: "argmax" (default) decodes the
            codes generated, as the model folder's ``seg_decoder.py`` does for a ``transformers`` user; "expected"
            decodes the expected code vector of each slot under the model's distribution over the 128 codes
            (``MaskVQVAE.decode_distributions``: what ``train.seg_shape`` trains). The answer text is the same
            either way. "expected" needs constrained greedy decoding (the contract fixes which step is which slot).
    """

    kind = "vlm"

    def __init__(
        self,
        model,
        processor,
        tokenizer: MaskTokenizer,
        structures: list[str] | None = None,
        batch_size: int = 128,
        max_new_tokens: int = 32,
        constrained: bool = True,
        num_beams: int | None = None,
        loc_decoding: str = "median",
        seg_decoding: str = "argmax",
    ):
        if loc_decoding not in LOC_DECODINGS:
            raise ValueError(f"loc_decoding must be one of {LOC_DECODINGS}, got {loc_decoding!r}")
        if seg_decoding not in SEG_DECODINGS:
            raise ValueError(f"seg_decoding must be one of {SEG_DECODINGS}, got {seg_decoding!r}")
        if num_beams is not None and (not isinstance(num_beams, int) or isinstance(num_beams, bool) or num_beams < 1):
            raise ValueError(f"num_beams must be a whole number >= 1, got {num_beams!r}")
        self.model, self.processor, self.tokenizer = model.eval(), processor, tokenizer
        self.num_beams, self.loc_decoding = num_beams, loc_decoding
        self.processor.tokenizer.padding_side = "left"  # generation appends on the right
        self.structures = list(structures or default_vlm_structures())
        self.batch_size, self.max_new_tokens, self.constrained = batch_size, max_new_tokens, constrained
        self.seg_decoding = seg_decoding
        if seg_decoding == "expected" and (not constrained or self.beams != 1):
            raise ValueError('seg_decoding="expected" needs constrained greedy decoding (constrained=True, 1 beam)')

    @property
    def beams(self) -> int:
        """The beam width ``generate`` runs with: ``num_beams``, else the model's generation config's (1: greedy)."""
        return self.num_beams or getattr(paligemma_of(self.model).generation_config, "num_beams", None) or 1

    def segment(
        self,
        image: Image.Image | np.ndarray,
        structures: list[str] | None = None,
        task: str = "segment",
        prompt_names: list[str] | None = None,
    ) -> dict[str, Prediction]:
        """Answers to ``{task} {display name}``, one prompt per structure, decoded at the image's size.

        Args:
            image: the radiograph (see the module docstring).
            structures: vocabulary names (default: ``self.structures``).
            task: "segment" (box + mask) or "detect" (box only; the mask is the filled box).
            prompt_names: the words used in the prompts (default: each structure's display name).
        """
        if task not in VLM_TASKS:
            raise ValueError(f"task must be one of {VLM_TASKS}, got {task!r}")
        grey = grey_image(image)
        names = resolve_names(structures, self.structures)
        words = prompt_names or [STRUCTURES[n].display for n in names]
        prompts = [f"{task} {w}" for w in words]
        if task == "segment" and self.seg_decoding == "expected" and self.constrained:
            answers, slots = self._answers(grey, prompts, slots=True)
        else:  # the answers alone: generate_answers, the one method a caller may replace
            answers, slots = self.generate_answers(grey, prompts), [None] * len(prompts)
        size = (grey.size[1], grey.size[0])
        return {n: self._prediction(n, a, size, task, p) for n, a, p in zip(names, answers, slots, strict=True)}

    @torch.no_grad()
    def _prediction(self, name: str, answer: str, size: tuple[int, int], task: str, slots=None) -> Prediction:
        """The prediction of one answer; ``slots`` [16, 128] (code probabilities): the mask is their expected map."""
        objects = self.tokenizer.decode(answer, size) if task == "segment" else decode_detections(answer, size)
        if not objects or not objects[0].valid:
            return Prediction(name, np.zeros(size, dtype=bool), None, False, answer)
        mask = objects[0].mask
        if slots is not None:
            drawn = self.tokenizer.codec.decode_distributions(slots[None].to(self.tokenizer.codec.device))[0]
            mask = paste_mask(drawn.cpu(), objects[0].box_yxyx, size)
        return Prediction(name, mask, tight_box(mask), True, answer)

    def generate_answers(self, image: Image.Image, prompts: list[str]) -> list[str]:
        """Answers (special tokens kept: ``<loc>``/``<seg>``) to ``prompts`` about one image, in order."""
        return self._answers(image, prompts, slots=False)[0]

    @torch.no_grad()
    def _answers(self, image: Image.Image, prompts: list[str], slots: bool) -> tuple[list[str], list]:
        """Answers to ``prompts`` about one image, and per answer its ``<seg>`` slots' code probabilities.

        The probabilities ([16, 128] per answer) only with ``slots`` (contract ``segment`` prompts); None otherwise.
        """
        pixels = self.processor.image_processor(image.convert("RGB"), return_tensors="pt")["pixel_values"]
        features = self._image_features(pixels)
        answers, distributions = [], []
        for start in range(0, len(prompts), self.batch_size):
            texts, probabilities = self._generate_chunk(prompts[start : start + self.batch_size], pixels, features,
                                                        slots)  # fmt: skip
            answers += texts
            distributions += list(probabilities) if probabilities is not None else [None] * len(texts)
        return answers, distributions

    def _image_features(self, pixels: torch.Tensor):
        """The vision tower + projector output for one image [1, 3, S, S], or None when generate cannot take it."""
        base = paligemma_of(self.model)
        if not accepts_image_features(base):
            return None  # a transformers without `mm_encoder_outputs`: fall back to re-encoding per prompt
        return base.get_image_features(pixels.to(base.device, base.dtype), return_dict=True)

    def _generate_chunk(self, prompts: list[str], pixels: torch.Tensor, features, slots: bool = False):
        """``(answers, code probabilities [B, 16, 128] of the <seg> slots or None)`` of one batch of prompts."""
        from transformers import LogitsProcessorList

        # The processor lays the text out (image tokens, <bos>, prompt, "\n"); a 1x1 placeholder keeps it from
        # preprocessing the real image once per prompt. The real pixels enter once, through `features`.
        placeholder = [Image.new("RGB", (1, 1))] * len(prompts)
        inputs = self.processor(
            text=[f"<image>{p}" for p in prompts], images=placeholder, return_tensors="pt", padding="longest"
        )
        inputs.pop("labels", None)
        inputs = inputs.to(self.model.device)
        if features is None:
            inputs["pixel_values"] = pixels.expand(len(prompts), -1, -1, -1).to(self.model.device, self.model.dtype)
        else:
            inputs.pop("pixel_values")
            batch_features = _expand_features(features, len(prompts))
            inputs["mm_encoder_outputs"] = {"image": batch_features}
        budget = {"max_new_tokens": self.max_new_tokens}
        if self.constrained:
            contract = AnswerContract.for_prompts(
                self.processor.tokenizer, prompts, inputs["input_ids"].shape[1], self.loc_decoding
            )
            budget = {"max_new_tokens": contract.max_new_tokens, "logits_processor": LogitsProcessorList([contract])}
        beams = {} if self.num_beams is None else {"num_beams": self.num_beams}
        scores = {"output_scores": True, "return_dict_in_generate": True} if slots else {}
        out = self.model.generate(**inputs, **budget, **beams, **scores, do_sample=False)
        sequences = out.sequences if slots else out
        answers = self.processor.batch_decode(sequences[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        return answers, (self._slot_probabilities(out.scores) if slots else None)

    def _slot_probabilities(self, scores: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """[B, 16, 128] softmax over the ``<seg>`` tokens at the 16 slots of a contract answer (steps 4..19)."""
        first = consecutive_ids(self.processor.tokenizer, "seg", NUM_SEG, 3)
        logits = torch.stack(scores[4 : 4 + CODES_PER_MASK], 1)[..., first : first + NUM_SEG]
        return torch.softmax(logits.float(), -1).cpu()


class ZoomEnsemble:
    """Test-time augmentation: a segmenter's masks on zoomed-out copies of the image, put back and voted.

    Each zoom z in (0, 1] shrinks the radiograph by z about its centre onto a black canvas of the image's size (what
    the training augmentation's zoom below 1 shows the models, ``train.augment``), the wrapped segmenter answers, and
    each mask is cut back out of the canvas and resized (bilinear) to the image. A pixel is in the ensemble's mask
    when it is in more than half of the valid answers' masks; a structure no zoom answered validly keeps the first
    zoom's (invalid) prediction. ``answer`` is the first zoom's raw answer. Costs ``len(zooms)`` x ``segment``.

    Args:
        segmenter: any ``Segmenter`` (``UNetSegmenter``, ``VLMSegmenter``).
        zooms: the zoom factors, each in (0, 1]; 1 is the image as it is.
    """

    def __init__(self, segmenter: Segmenter, zooms: tuple[float, ...] = (1.0, 0.9, 0.8)):
        zooms = tuple(float(z) for z in zooms)
        if not zooms or not all(0 < z <= 1 for z in zooms):
            raise ValueError(f"zooms must be one or more factors in (0, 1], got {list(zooms)}")
        self.segmenter, self.zooms = segmenter, zooms

    @property
    def kind(self) -> str:
        """The wrapped segmenter's kind ("vlm" or "unet")."""
        return self.segmenter.kind

    @property
    def structures(self) -> list[str]:
        """What the wrapped segmenter answers by default."""
        return self.segmenter.structures

    def segment(self, image: Image.Image | np.ndarray, structures: list[str] | None = None) -> dict[str, Prediction]:
        """``segment`` of the wrapped segmenter, voted over the zooms (see the class docstring)."""
        grey = grey_image(image)
        runs = [self.segmenter.segment(zoomed_out(grey, z), structures) for z in self.zooms]
        out = {}
        for name, first in runs[0].items():
            masks = [restored(run[name].mask, z) for z, run in zip(self.zooms, runs, strict=True) if run[name].valid]
            if not masks:
                out[name] = first
                continue
            mask = np.mean(masks, 0) > 0.5
            out[name] = Prediction(name, mask, tight_box(mask), True, first.answer)
        return out


def _zoom_window(size: tuple[int, int], zoom: float) -> tuple[int, int, int, int]:
    """``(left, top, width, height)`` pixels of the shrunk image on a canvas of ``size`` = (W, H), centred."""
    width, height = max(1, round(size[0] * zoom)), max(1, round(size[1] * zoom))
    return (size[0] - width) // 2, (size[1] - height) // 2, width, height


def zoomed_out(image: Image.Image, zoom: float) -> Image.Image:
    """``image`` ("L") shrunk by ``zoom`` (0, 1] about its centre onto a black canvas of its own size."""
    if zoom == 1:
        return image
    left, top, width, height = _zoom_window(image.size, zoom)
    canvas = Image.new("L", image.size, 0)
    canvas.paste(image.resize((width, height), Image.BILINEAR), (left, top))
    return canvas


def restored(mask: np.ndarray, zoom: float) -> np.ndarray:
    """A mask [H, W] of ``zoomed_out(image, zoom)`` as float [H, W] in [0, 1] on the image itself (bilinear)."""
    if zoom == 1:
        return mask.astype(np.float32)
    height, width = mask.shape
    left, top, w, h = _zoom_window((width, height), zoom)
    window = Image.fromarray(mask[top : top + h, left : left + w].astype(np.float32))
    return np.asarray(window.resize((width, height), Image.BILINEAR))


def paligemma_of(model):
    """The ``PaliGemmaForConditionalGeneration`` inside a possible ``PeftModel`` wrapper."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def accepts_image_features(model) -> bool:
    """Whether ``model.generate`` takes pre-computed image features: its public ``forward`` has ``mm_encoder_outputs``.

    The same test transformers' generation makes (privately); ``test_vision_tower_runs_once_per_image`` fails when a
    transformers release drops the argument, instead of the batched path silently re-encoding the image per prompt.
    """
    return "mm_encoder_outputs" in inspect.signature(model.forward).parameters


def _expand_features(features, batch: int):
    """The same projected image features [batch, T, D] for every prompt (a view: no copy, no recompute)."""
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    return BaseModelOutputWithPooling(pooler_output=features.pooler_output.expand(batch, -1, -1))


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------


def load_segmenter(
    name_or_path: str | Path,
    device: str | None = None,
    codec: str | Path | None = None,
    base_model: str | None = None,
    local_only: bool = False,
    **kwargs,
) -> Segmenter:
    """A ready ``Segmenter`` from a model folder, a Hub id or "bundled-vlm"/"bundled-unet".

    U-Net (segmentation-models-pytorch's ``config.json`` with ``_structures``, or the earlier format), full VLM or
    LoRA adapter (``adapter_config.json``; its base model comes from the adapter config or ``base_model``).

    Args:
        name_or_path: the model folder, Hub id, or "bundled-vlm"/"bundled-unet".
        device: "cpu", "cuda", ..., or "auto"/None: CUDA when available (``chexanatomy.locate.resolve_device``).
        codec: the mask codec (default: the folder's ``mask_codec/``, else the bundled codec).
        base_model: the base of a LoRA adapter when its adapter config does not name a reachable one.
        local_only: never look anything up on the Hub, whatever the name (``chexanatomy.locate``).
        kwargs: passed to ``VLMSegmenter`` (batch_size, max_new_tokens, structures, constrained, num_beams,
            loc_decoding, seg_decoding).

    Raises:
        FileNotFoundError: naming the path, when a local path has no model in it, or does not exist and is not a Hub
            id (``owner/name``; a mistyped local path never goes to the Hub), or names a Hub model that is not cached
            while offline (``chexanatomy.locate``).
    """
    device = resolve_device(device)
    source = model_source(name_or_path)
    if source is None:
        raise ValueError("no model to load: the name is 'none'")
    path = locate_model(source, SEGMENTER_MARKERS, local_only=local_only)
    config = json.loads((path / "config.json").read_text(encoding="utf-8")) if (path / "config.json").exists() else {}
    from .unet import AnatomyUNet, unet_settings

    if unet_settings(config) is not None:
        return UNetSegmenter(AnatomyUNet.from_pretrained(str(path)).to(device))
    return _load_vlm(path, device, codec, base_model, **kwargs)


def _load_vlm(path: Path, device: str, codec, base_model: str | None, **kwargs) -> VLMSegmenter:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from .codec import default_tokenizer, load_codec

    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    adapter = path / "adapter_config.json"
    if adapter.exists():
        from peft import PeftModel

        base = base_model or json.loads(adapter.read_text(encoding="utf-8"))["base_model_name_or_path"]
        model = AutoModelForImageTextToText.from_pretrained(base, dtype=dtype, attn_implementation="eager")
        model = PeftModel.from_pretrained(model, str(path))
    else:
        model = AutoModelForImageTextToText.from_pretrained(str(path), dtype=dtype, attn_implementation="eager")
    processor = AutoProcessor.from_pretrained(str(path))
    codec = codec or (path / "mask_codec" if (path / "mask_codec" / "config.json").exists() else None)
    codec = load_codec(codec)
    if codec is None:
        raise ValueError("a VLM needs a mask codec to decode its answers; codec='none' is for corpora only")
    return VLMSegmenter(model.to(device), processor, default_tokenizer(codec), **kwargs)


def timed_segment(
    segmenter: Segmenter, image, structures: list[str] | None = None
) -> tuple[dict[str, Prediction], float]:
    """``segment`` and the seconds it took (wall clock)."""
    start = time.perf_counter()
    predictions = segmenter.segment(image, structures)
    return predictions, time.perf_counter() - start
