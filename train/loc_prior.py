"""A geometric prior for the ``<loc>`` tokens of a language model trained from scratch.

A pre-trained PaliGemma has learnt that ``<loc0412>`` and ``<loc0413>`` are neighbours; a model built from a config
(``train.tiny_paligemma``) sees 1,024 unrelated tokens, and in its boxes the second ``<loc>`` often repeats the first
(x0 == y0) instead of being read from the image. Two parts, both opt-in in ``train.sft``:

* ``--loc_init true``: :func:`init_loc_embeddings` gives the 1,024 ``<loc>`` rows an ordered initialisation:
  sinusoids of the normalised coordinate v = k / 1023 at log-spaced frequencies, so that nearby bins have similar
  embeddings (a hidden state scores neighbours alike). Two measured failures shaped it:

  * **Scale.** A logit is h . e with h the final norm's output (root-mean-square 1, so |h| = sqrt(width)); rows at
    the usual initial scale (0.02 per element) cap every logit near 0.02 x width (3.8 for the tiny model's 192), so
    no ``<loc>`` can get more than a few per cent of the probability and the gradients that would sharpen it are as
    small. The output rows get a scale at which an aligned hidden state reaches ``PEAK_LOGIT``.
  * **Copying.** With the input and output embeddings tied, the residual stream carries the previous token's
    embedding to the output, where it scores that same token highest: after 250 steps the model's x0 was the y0 it
    had just been given (306 -> 306 for the heart, 110 -> 110 for a lung field) and its x1 the y1 (665 -> 665,
    875 -> 875): the x0 == y0 answers of the bundled VLM, at any scale. So the output layer is untied
    (``tie_word_embeddings`` false; still a plain PaliGemma for ``transformers``) with fresh rows, and the ordered
    *input* rows are turned by a random rotation: neighbours stay alike on the input side, but a bin's input
    embedding no longer points at its own output row.
* ``--loc_sigma S``: the loss at a ``<loc>`` position uses a soft target, a Gaussian over the 1,024 bins centred on
  the reference bin with standard deviation S bins (``chexanatomy.finetune.LocSmoothing``), so a prediction one bin
  off costs little and one across the image costs much.
"""

from __future__ import annotations

import math

import torch

from chexanatomy.answer_contract import consecutive_ids
from chexanatomy.finetune import LocSmoothing

LOC_COUNT = 1024
PEAK_LOGIT = 16.0  # the logit a hidden state aligned with one ordered <loc> row gives it (see init_loc_embeddings)


def ordered_loc_embeddings(dim: int, rms: float, count: int = LOC_COUNT) -> torch.Tensor:
    """[count, dim] embeddings of the bins 0..count-1: sin/cos of v * w at dim/2 log-spaced frequencies w.

    The lowest frequency (pi/2 per unit of v) orders the whole range monotonically; the highest (a period of about
    eight bins) separates neighbours. Each element has root-mean-square ``rms`` (the model's own initial scale).
    """
    if dim < 2:
        raise ValueError(f"the embedding width must be at least 2, got {dim}")
    v = torch.arange(count, dtype=torch.float64) / (count - 1)
    freqs = torch.logspace(math.log10(math.pi / 2), math.log10(count * math.pi / 4), dim // 2, dtype=torch.float64)
    angles = v[:, None] * freqs[None]
    table = torch.zeros(count, dim, dtype=torch.float64)
    table[:, 0 : 2 * (dim // 2) : 2], table[:, 1 : 2 * (dim // 2) : 2] = torch.sin(angles), torch.cos(angles)
    return (table * rms * math.sqrt(2)).float()


def loc_token_range(tokenizer) -> tuple[int, int]:
    """``(first id, count)`` of the ``<loc>`` tokens; ValueError unless they are 1,024 consecutive ids."""
    return consecutive_ids(tokenizer, "loc", LOC_COUNT, 4), LOC_COUNT


def loc_row_rms(width: int, others_rms: float, peak_logit: float = PEAK_LOGIT) -> float:
    """Per-element root-mean-square of the ordered ``<loc>`` rows for a model of hidden size ``width``.

    A hidden state of root-mean-square 1 (a final RMS norm's output) aligned with a row of per-element rms ``r`` gives
    it the logit ``width * r``; the rows get ``peak_logit / width``, or the other rows' own rms when that is larger.
    """
    return max(others_rms, peak_logit / width)


def untie_output_embeddings(model, rms: float | None = None, seed: int = 0) -> None:
    """Give ``model`` its own output layer (``tie_word_embeddings`` false).

    Args:
        model: a ``PaliGemmaForConditionalGeneration`` (or any model with tied input/output embeddings).
        rms: fresh Gaussian rows of this root-mean-square (a model from scratch); None: a copy of the tied matrix,
            so a trained model answers exactly as before, and its output rows can move apart from its input rows
            from then on (continuing a model trained tied).
        seed: the fresh rows' seed.

    A no-op for a model whose output layer is already untied. ``save_pretrained`` then writes ``lm_head.weight``
    and ``from_pretrained`` reads it back untied.
    """
    output = model.get_output_embeddings()
    if output.weight.data_ptr() != model.get_input_embeddings().weight.data_ptr():
        return
    if rms is None:
        fresh = output.weight.detach().clone()
    else:
        generator = torch.Generator().manual_seed(seed)
        fresh = torch.randn(output.weight.shape, generator=generator, dtype=torch.float32).to(output.weight.dtype) * rms
    output.weight = torch.nn.Parameter(fresh)
    for config in (model.config, getattr(model.config, "text_config", None)):
        if config is not None:
            config.tie_word_embeddings = False
    model.all_tied_weights_keys = model.get_expanded_tied_weights_keys(all_submodels=True)


def random_rotation(dim: int, seed: int = 0) -> torch.Tensor:
    """A [dim, dim] orthogonal matrix (QR of a seeded Gaussian, signs fixed): turned rows keep their dot products."""
    generator = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))[None]


@torch.no_grad()
def init_loc_embeddings(model, tokenizer, peak_logit: float = PEAK_LOGIT, seed: int = 0) -> None:
    """The ``<loc>`` prior for a model trained from scratch, in place (see the module docstring).

    * output layer: untied (:func:`untie_output_embeddings`) with rows at :func:`loc_row_rms`; its ``<loc>`` rows
      ordered, so an aligned hidden state gives one bin the logit ``peak_logit`` (16: e^16 outweighs the other 1,023
      bins together);
    * input embeddings: the ``<loc>`` rows ordered at the other rows' scale, turned by :func:`random_rotation`.

    Every other input row is left as it is.
    """
    first, count = loc_token_range(tokenizer)
    weight = model.get_input_embeddings().weight
    others_rms = float(torch.cat([weight[:first], weight[first + count :]]).pow(2).mean().sqrt())
    width = weight.shape[1]
    out_rms = loc_row_rms(width, others_rms, peak_logit)
    untie_output_embeddings(model, out_rms, seed)
    output = model.get_output_embeddings().weight
    output[first : first + count] = ordered_loc_embeddings(width, out_rms, count).to(output.dtype)
    turned = ordered_loc_embeddings(width, others_rms, count).double() @ random_rotation(width, seed + 1)
    weight[first : first + count] = turned.to(weight.dtype)


def loc_smoothing(tokenizer, sigma: float) -> LocSmoothing | None:
    """The soft ``<loc>`` targets of ``tokenizer`` with width ``sigma`` bins, or None when ``sigma`` is 0."""
    if sigma == 0:
        return None
    first, count = loc_token_range(tokenizer)
    return LocSmoothing(first, count, sigma)


__all__ = [
    "init_loc_embeddings",
    "loc_row_rms",
    "loc_smoothing",
    "loc_token_range",
    "ordered_loc_embeddings",
    "random_rotation",
    "untie_output_embeddings",
]
