"""Grow a trained language model deeper without changing its answers (``train.sft --grow_text_layers N``).

The bundled VLM underfits: on its own training images it scores what it scores on the test images. Training a wider
or deeper decoder from nothing would throw away the stages that taught it the answer format. Instead, N new Gemma 2
decoder layers are inserted, each a copy of the layer it follows, with its two *output* norms closed:

    h = h + post_attention_layernorm(attention(...))      # Gemma 2's sandwich norms
    h = h + post_feedforward_layernorm(mlp(...))

``Gemma2RMSNorm`` scales by ``(1 + weight)``; a weight of -1 makes each new branch add exactly zero, so the grown model
gives the same logits as before (tested). The gradient of that weight is the branch's normalised output, so the gates
open from the first step, and the copied layer starts from features the model already uses (a zero-initialised
projection would instead sit behind the norm's 1 / sqrt(eps) Jacobian at zero input). The result is still a plain
``PaliGemmaForConditionalGeneration``: the config's ``num_hidden_layers`` and ``layer_types`` say what was inserted.
"""

from __future__ import annotations

import copy

import torch

from chexanatomy.cli import UsageError
from chexanatomy.inference import paligemma_of


def language_model(model):
    """The Gemma 2 decoder of a PaliGemma model (bare, or under a PEFT wrapper)."""
    return paligemma_of(model).model.language_model


def growth_sources(layers: int, new: int) -> list[int]:
    """Which existing layers get a copy after them: ``new`` of ``range(layers)``, evenly spread, deepest last.

    >>> growth_sources(4, 4), growth_sources(4, 2), growth_sources(6, 1)
    ([0, 1, 2, 3], [1, 3], [5])
    """
    if not 1 <= new <= layers:
        raise UsageError(f"--grow_text_layers: can grow by 1 to {layers} layers (one copy per layer), got {new}")
    return [layers - 1 - (i * layers) // new for i in range(new)][::-1]


def grow_text_layers(model, new: int) -> list[int]:
    """Insert ``new`` gated copies of the language model's layers (see the module docstring); answers unchanged.

    Each copy sits right after its source and keeps its source's attention type (sliding or full), so every layer's
    attention mask stays what it was. ``layer_idx`` (the key-value cache slot) is renumbered for all layers.

    Returns:
        The new layers' indices in the grown model.
    """
    decoder = language_model(model)
    layers, text_config = decoder.layers, decoder.config
    types = list(getattr(text_config, "layer_types", None) or ["full_attention"] * len(layers))
    sources = set(growth_sources(len(layers), new))
    grown, grown_types, inserted = [], [], []
    for index, layer in enumerate(layers):
        grown.append(layer)
        grown_types.append(types[index])
        if index in sources:
            twin = copy.deepcopy(layer)
            with torch.no_grad():
                twin.post_attention_layernorm.weight.fill_(-1.0)
                twin.post_feedforward_layernorm.weight.fill_(-1.0)
            inserted.append(len(grown))
            grown.append(twin)
            grown_types.append(types[index])
    for index, layer in enumerate(grown):
        layer.self_attn.layer_idx = index
    decoder.layers = torch.nn.ModuleList(grown)
    text_config.num_hidden_layers = len(grown)
    text_config.layer_types = grown_types
    return inserted
