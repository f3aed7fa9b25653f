"""A geometric prior for the ``<loc>`` tokens of a language model trained from scratch.

A pre-trained PaliGemma has learnt that ``<loc0412>`` and ``<loc0413>`` are neighbours; a model built from a config
(``train.tiny_paligemma``) sees 1,024 unrelated tokens, and in its boxes the second ``<loc>`` often repeats the first
(x0 == y0) instead of being read from the image. Two parts, both opt-in in ``train.sft``:

* ``--loc_init true``: :func:`init_loc_embeddings` gives the 1,024 ``<loc>`` rows of the (tied) embedding matrix an
  ordered initialisation: sinusoids of the normalised coordinate v = k / 1023 at log-spaced frequencies, so that
  nearby bins have similar input embeddings *and* similar output rows (a hidden state scores neighbours alike).
  The rows are scaled so that the output layer *can* be confident: a tied logit is h . e with h the final norm's
  output (root-mean-square 1, so |h| = sqrt(width)); rows at the usual initial scale (0.02 per element) cap every
  logit near 0.02 x width (3.8 for the tiny model's 192), so no ``<loc>`` can get more than a few per cent of the
  probability and the gradients that would sharpen them are as small. The first CPU run at that scale still had
  p(argmax) = 0.007 and a mean error of 208 bins after 250 steps, four times the error of always answering the
  structure's mean box.
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


@torch.no_grad()
def init_loc_embeddings(model, tokenizer, peak_logit: float = PEAK_LOGIT) -> None:
    """Overwrite the ``<loc>`` rows of ``model``'s input embeddings (tied to the output layer) in place, ordered.

    The scale (:func:`loc_row_rms`) lets an aligned hidden state give a ``<loc>`` the logit ``peak_logit`` (16:
    e^16 outweighs the other 1,023 bins together), or keeps the other rows' scale when that is larger. An untied
    output layer gets the same rows.
    """
    first, count = loc_token_range(tokenizer)
    weight = model.get_input_embeddings().weight
    others = torch.cat([weight[:first], weight[first + count :]])
    rms = loc_row_rms(weight.shape[1], float(others.pow(2).mean().sqrt()), peak_logit)
    rows = ordered_loc_embeddings(weight.shape[1], rms, count)
    weight[first : first + count] = rows.to(weight.dtype)
    output = model.get_output_embeddings()
    if output is not None and output.weight.data_ptr() != weight.data_ptr():
        output.weight[first : first + count] = rows.to(output.weight.dtype)


def loc_smoothing(tokenizer, sigma: float) -> LocSmoothing | None:
    """The soft ``<loc>`` targets of ``tokenizer`` with width ``sigma`` bins, or None when ``sigma`` is 0."""
    if sigma == 0:
        return None
    first, count = loc_token_range(tokenizer)
    return LocSmoothing(first, count, sigma)


__all__ = ["init_loc_embeddings", "loc_row_rms", "loc_smoothing", "loc_token_range", "ordered_loc_embeddings"]
