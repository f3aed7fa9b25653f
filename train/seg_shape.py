"""A shape loss for the 16 ``<seg>`` codes: the mask they draw, scored as a mask (``train.sft --seg_shape_weight``).

Cross-entropy over the 128 ``<seg>`` tokens treats every wrong code as equally wrong: a code whose 16x16 cell draws
almost the reference's edge costs as much as one that draws nothing, so a model trained from scratch learns a
generic lung (issue 21: its own codes placed in the reference box score no better than in its own box on the real
validation radiographs, 0.788 / 0.779 against 0.804 / 0.780, while the reference codes in its box reach 0.850 on
the Montgomery images). The codec knows which codes draw alike; this loss lets the model learn from it:

* for every object of the answer, the model's (teacher-forced) distribution over the 128 codes at each of its 16
  ``<seg>`` positions is drawn by the codec's frozen decoder as the map of the expected code vectors
  (``MaskVQVAE.decode_distributions``: ``softmax(logits) @ codebook``, differentiable in the probabilities);
* the reference is the decoder's map of the target codes (> 0), the mask the answer would draw if right;
* the loss is ``train.unet.loss_fn`` (soft Dice + binary cross-entropy) of ``SCALE`` x the drawn map against it.

The decoder is frozen and stays outside the model: nothing of it is saved, and the model's answers stay ordinary
tokens. Decoding the expected vector at inference (``VLMSegmenter(seg_decoding="expected")``) draws what this loss
trained; ``"argmax"`` (the default, and what ``generate`` gives a ``transformers`` user) draws the likeliest codes.
"""

from __future__ import annotations

import torch

from chexanatomy.answer_contract import consecutive_ids
from chexanatomy.mask_tokens import CODES_PER_MASK, NUM_SEG, MaskCodec

from .unet import loss_fn

SCALE = 4.0  # the decoder's map is roughly in [-1, 1] with the mask > 0: x4 gives logits of about +-4 (p 0.02/0.98)


class SegShapeLoss:
    """``weight`` x the shape loss of an answer batch's ``<seg>`` codes (see the module docstring).

    Args:
        codec: the mask codec the training targets were encoded with (its decoder is frozen here, not copied).
        tokenizer: the model's text tokenizer (``<seg000>``..``<seg127>`` must be consecutive ids).
        weight: factor of the loss (> 0).
    """

    def __init__(self, codec: MaskCodec, tokenizer, weight: float):
        if not (weight > 0 and torch.isfinite(torch.tensor(weight))):
            raise ValueError(f"the shape loss weight must be a finite number > 0, got {weight}")
        self.codec, self.weight = codec, weight
        self.recent: list[float] = []  # the unweighted losses since the last log
        self.first_id = consecutive_ids(tokenizer, "seg", NUM_SEG, 3)
        for parameter in codec.parameters():
            parameter.requires_grad_(False)

    def code_groups(self, targets: torch.Tensor) -> torch.Tensor:
        """[N, 16] indices into ``targets`` of each object's 16 ``<seg>`` targets, in order.

        ``targets`` [M] are a batch's targets in reading order (row by row; -100 where unlabelled). An object's codes
        are 16 consecutive ``<seg>`` targets; a run of any other length (an answer cut short) is left out.
        """
        is_seg = (targets >= self.first_id) & (targets < self.first_id + NUM_SEG)
        positions = is_seg.nonzero().squeeze(1)
        if positions.numel() == 0:
            return positions.reshape(0, CODES_PER_MASK)
        breaks = (positions[1:] != positions[:-1] + 1).nonzero().squeeze(1) + 1
        runs = torch.tensor_split(positions, breaks.tolist())
        whole = [run for run in runs if run.numel() == CODES_PER_MASK]
        return torch.stack(whole) if whole else positions.new_zeros(0, CODES_PER_MASK)

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The weighted loss of ``logits`` [M, V] predicting ``targets`` [M] (-100: unlabelled); 0 if no object."""
        groups = self.code_groups(targets)
        if groups.numel() == 0:
            return logits.new_zeros(())
        seg_logits = logits[:, self.first_id : self.first_id + NUM_SEG][groups].float()  # [N, 16, 128], no [M, V] copy
        drawn = self.codec.decode_distributions(torch.softmax(seg_logits, -1))
        with torch.no_grad():
            reference = self.codec.decode_indices(targets[groups] - self.first_id) > 0
        loss = loss_fn(SCALE * drawn[:, None], reference[:, None].float())
        self.recent.append(float(loss.detach()))
        return self.weight * loss

    def mean_recent(self) -> dict:
        """``{"seg_shape_loss": mean unweighted loss since the last call}`` ({} when no step ran)."""
        recent, self.recent = self.recent, []
        return {"seg_shape_loss": round(sum(recent) / len(recent), 5)} if recent else {}


__all__ = ["SCALE", "SegShapeLoss"]
