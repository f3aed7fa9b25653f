"""A tiny PaliGemma-architecture model with a locally trained tokenizer: no download anywhere.

Used by the tests, the smoke recipe and the bundled demonstration model. The architecture is the real one
(``PaliGemmaForConditionalGeneration``: SigLIP vision tower, linear projector, Gemma 2 decoder); only the sizes
shrink. The tokenizer is a byte-fallback BPE trained here on the anatomy vocabulary's prompt words (so every
structure name is a few tokens and any other text still encodes byte by byte), wrapped as a ``GemmaTokenizer``;
``PaliGemmaProcessor`` then appends ``<image>``, the 1,024 ``<loc>`` and the 128 ``<seg>`` tokens exactly as for
the real checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import (
    GemmaTokenizer,
    PaliGemmaConfig,
    PaliGemmaForConditionalGeneration,
    PaliGemmaProcessor,
    SiglipImageProcessor,
)

from chexanatomy.anatomy import STRUCTURES

SPECIAL = ["<pad>", "<eos>", "<bos>", "<unk>"]


@dataclass(frozen=True)
class TinySpec:
    """Sizes of the tiny model (defaults: ~3 M parameters, 128 px, 64 image tokens)."""

    image_size: int = 128
    patch_size: int = 16
    vision_layers: int = 4
    text_layers: int = 4
    hidden: int = 192
    heads: int = 4
    bpe_vocab: int = 640


def _training_text() -> list[str]:
    words = ["segment", "detect", "caption", "answer", "en", ";", "left", "right", "upper", "lower", "middle"]
    names = [p for s in STRUCTURES.values() for p in (s.name.replace("_", " "), *s.prompt_names)]
    return words + names + [f"segment {n} ; detect {n}" for n in names]


def build_tokenizer(vocab_size: int = 640) -> GemmaTokenizer:
    """A byte-fallback BPE ``GemmaTokenizer`` (``<bos>``, ``<eos>``, ``<pad>``, ``<unk>``) trained on prompt text."""
    model = models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True)
    tok = Tokenizer(model)
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.pre_tokenizer = pre_tokenizers.Split("▁", behavior="merged_with_previous")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    byte_tokens = [f"<0x{i:02X}>" for i in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL + byte_tokens, show_progress=False)
    tok.train_from_iterator(_training_text(), trainer)
    return GemmaTokenizer(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )


def build_processor(spec: TinySpec = TinySpec()) -> PaliGemmaProcessor:
    """The tiny model's processor: SigLIP-style image processing at ``spec.image_size`` + the BPE tokenizer."""
    tokens = (spec.image_size // spec.patch_size) ** 2
    image_processor = SiglipImageProcessor(
        size={"height": spec.image_size, "width": spec.image_size},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    image_processor.image_seq_length = tokens
    return PaliGemmaProcessor(image_processor=image_processor, tokenizer=build_tokenizer(spec.bpe_vocab))


def build_model(
    processor: PaliGemmaProcessor, spec: TinySpec = TinySpec(), seed: int = 0
) -> PaliGemmaForConditionalGeneration:
    """A randomly initialised tiny PaliGemma whose vocabulary matches ``processor``'s tokenizer."""
    import torch

    tok = processor.tokenizer
    tokens = (spec.image_size // spec.patch_size) ** 2
    config = PaliGemmaConfig(
        vision_config={
            "model_type": "siglip_vision_model", "hidden_size": spec.hidden, "intermediate_size": 4 * spec.hidden,
            "num_hidden_layers": spec.vision_layers, "num_attention_heads": spec.heads,
            "image_size": spec.image_size, "patch_size": spec.patch_size, "projection_dim": spec.hidden,
        },
        text_config={
            "model_type": "gemma2", "hidden_size": spec.hidden, "intermediate_size": 4 * spec.hidden,
            "num_hidden_layers": spec.text_layers, "num_attention_heads": spec.heads, "num_key_value_heads": 1,
            "head_dim": spec.hidden // spec.heads, "vocab_size": len(tok), "max_position_embeddings": 1024,
            "sliding_window": 512,
        },
        image_token_index=processor.image_token_id,
        projection_dim=spec.hidden,
        hidden_size=spec.hidden,
        vocab_size=len(tok),
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )  # fmt: skip
    config.text_config.num_image_tokens = tokens
    # Gemma 2's logit soft-capping rules out SDPA attention (docs/environment.md): eager on CPU.
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = PaliGemmaForConditionalGeneration(config)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    return model
