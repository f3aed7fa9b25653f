"""Generation that can only produce answers inside the token contract (docs/mask-tokens.md).

A ``transformers`` ``LogitsProcessor``: at every step it leaves only the tokens the contract allows next, so a greedy
(or sampled) answer to ``segment a ; b`` is always ``<loc>y0 <loc>x0 <loc>y1 <loc>x1 <seg>x16 a ; <loc>... b<eos>``
with y1 > y0 and x1 > x0, and to ``detect a`` always ``<loc>x4 a<eos>``. Which box and which codes stay the model's
choice; the names are the prompt's own, in its order (the answers the model is trained on repeat them).

Each ``<loc>`` is, by default, the **median** of the model's distribution over the bins the contract allows
(``loc_decoding="median"``): a coordinate is ordinal, and the median is the bin with the least expected distance to
the model's belief, where the argmax can sit on a narrow outlying peak (a box edge copied from the token before,
the other side of the chest). ``loc_decoding="generate"`` leaves every token's choice to ``generate`` (greedy,
beams, sampling). The ``<seg>`` codes are categorical and always left to ``generate``.

    contract = AnswerContract.for_prompts(processor.tokenizer, prompts, prompt_length=inputs["input_ids"].shape[1])
    model.generate(**inputs, logits_processor=LogitsProcessorList([contract]), max_new_tokens=contract.max_new_tokens)

Needs only torch and transformers (no CheXanatomy import), so that a model folder can carry a copy of this file for
users who have nothing but ``transformers`` (``answer_contract.py`` in the bundled VLM folder is this file, byte for
byte; a test keeps them equal). ``chexanatomy.inference``, the evaluation, the few-shot study and the Space all
generate through it.
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor

LOC_TOKENS, SEG_TOKENS, CODES_PER_MASK = 1024, 128, 16
TASK_CODES = {"segment": CODES_PER_MASK, "detect": 0}  # <seg> tokens per object of each task
_SEPARATOR = " ; "

# Slot kinds of a plan: a step's allowed tokens. ("force", id) forces one token.
_LOC_Y0, _LOC_X0, _LOC_Y1, _LOC_X1, _SEG = "y0", "x0", "y1", "x1", "seg"
_LOC_SLOTS = (_LOC_Y0, _LOC_X0, _LOC_Y1, _LOC_X1)
LOC_DECODINGS = ("median", "generate")


def parse_prompt(prompt: str) -> tuple[str, list[str]]:
    """``"segment a ; b"`` -> ``("segment", ["a", "b"])``. Raises ValueError for another task or no names."""
    task, _, rest = prompt.strip().partition(" ")
    names = [n.strip() for n in rest.split(";")]
    if task not in TASK_CODES or not all(names):
        raise ValueError(f"prompt must be 'segment NAME[ ; NAME...]' or 'detect ...', got {prompt!r}")
    return task, names


def _between(tokenizer, text: str) -> list[int]:
    """Token ids of plain ``text`` as it is tokenised inside an answer: after a ``<seg>`` token, before a ``<loc>``."""
    ids = tokenizer("<seg000>" + text + "<loc0000>", add_special_tokens=False)["input_ids"]
    return ids[1:-1]


class AnswerContract(LogitsProcessor):
    """Leaves only the contract's next tokens in the scores (all others -inf), row by row.

    Args:
        plans: one plan per batch row: the slot of every answer position, each ``"y0"``, ``"x0"``, ``"y1"``,
            ``"x1"`` (a ``<loc>`` token; y1 > y0 and x1 > x0 of the same object), ``"seg"`` (any ``<seg>``) or
            ``("force", token_id)`` (the name's tokens, the separator, ``<eos>``).
        loc0, seg0: ids of ``<loc0000>`` and ``<seg000>`` (the 1,024 and 128 ids are consecutive).
        prompt_length: the padded prompt's length in tokens: answers start there.
        pad_id: the token a finished row is given.
        loc_decoding: "median" (default): each ``<loc>`` is forced to the median bin of the model's distribution over
            the allowed bins; "generate": only the contract's masking, the choice is ``generate``'s.
    """

    def __init__(
        self, plans: list[list], loc0: int, seg0: int, prompt_length: int, pad_id: int, loc_decoding: str = "median"
    ):
        if loc_decoding not in LOC_DECODINGS:
            raise ValueError(f"loc_decoding must be one of {LOC_DECODINGS}, got {loc_decoding!r}")
        self.plans, self.loc0, self.seg0 = plans, loc0, seg0
        self.prompt_length, self.pad_id, self.loc_decoding = prompt_length, pad_id, loc_decoding

    @property
    def max_new_tokens(self) -> int:
        """The longest plan: a ``generate`` budget that always lets every answer finish."""
        return max(len(p) for p in self.plans)

    @classmethod
    def for_prompts(
        cls, tokenizer, prompts: list[str], prompt_length: int, loc_decoding: str = "median"
    ) -> AnswerContract:
        """The contract of each prompt (``segment ...`` / ``detect ...``, without ``<image>``) for ``tokenizer``.

        Raises:
            ValueError: for a prompt of another task, or a tokenizer without the 1,024 ``<loc>`` and 128 ``<seg>``
                tokens in consecutive ids.
        """
        loc0 = consecutive_ids(tokenizer, "loc", LOC_TOKENS, 4)
        seg0 = consecutive_ids(tokenizer, "seg", SEG_TOKENS, 3)
        plans = []
        for prompt in prompts:
            task, names = parse_prompt(prompt)
            plan: list = []
            for i, name in enumerate(names):
                last = i == len(names) - 1
                # The name and what follows it, tokenised together as in a training answer ("lung▁" ";▁").
                tail = _between(tokenizer, " " + name + ("" if last else _SEPARATOR))
                plan += [_LOC_Y0, _LOC_X0, _LOC_Y1, _LOC_X1] + [_SEG] * TASK_CODES[task]
                plan += [("force", t) for t in tail + ([tokenizer.eos_token_id] if last else [])]
            plans.append(plan)
        return cls(plans, loc0, seg0, prompt_length, tokenizer.pad_token_id, loc_decoding)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """``scores`` [B, V] with every token the contract forbids next set to -inf (``input_ids`` [B, L]: so far).

        B is the number of prompts, or k times it when ``generate`` expands each prompt into k consecutive rows
        (beam search with ``num_beams=k``, or ``num_return_sequences=k``): row r then follows prompt r // k.
        """
        step = input_ids.shape[1] - self.prompt_length
        rows, prompts = scores.shape[0], len(self.plans)
        if rows % prompts:
            raise ValueError(f"{rows} rows of scores for {prompts} prompts: expected a multiple")
        allowed = torch.zeros_like(scores, dtype=torch.bool)
        loc_rows = []
        for row in range(rows):
            plan = self.plans[row // (rows // prompts)]
            lo, hi = self._allowed(plan, step, input_ids[row])
            allowed[row, lo:hi] = True
            if step < len(plan) and plan[step] in _LOC_SLOTS:
                loc_rows.append(row)
        scores = scores.masked_fill(~allowed, float("-inf"))
        if self.loc_decoding == "median" and loc_rows:
            scores = self._force_median(scores, torch.tensor(loc_rows))
        return scores

    def _force_median(self, scores: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """``scores`` with each of ``rows`` (at a ``<loc>`` slot, masked) left with one finite entry: its median bin.

        The median is the first bin where the cumulative probability over the ``<loc>`` bins reaches 0.5; it always
        has probability > 0, so it is an allowed bin.
        """
        window = scores[rows, self.loc0 : self.loc0 + LOC_TOKENS].float().softmax(-1)
        median = (window.cumsum(-1) < 0.5).sum(-1).clamp(max=LOC_TOKENS - 1)
        median = torch.where(window.gather(1, median[:, None])[:, 0] > 0, median, window.argmax(-1))  # rounding
        forced = torch.full_like(scores[rows], float("-inf"))
        forced[torch.arange(len(rows)), self.loc0 + median] = 0.0
        scores = scores.clone()
        scores[rows] = forced
        return scores

    def _allowed(self, plan: list, step: int, ids: torch.Tensor) -> tuple[int, int]:
        """The id range [lo, hi) allowed in ``plan`` at answer position ``step`` (``ids``: the row so far)."""
        if step >= len(plan):
            return self.pad_id, self.pad_id + 1
        slot = plan[step]
        if isinstance(slot, tuple):
            return slot[1], slot[1] + 1
        if slot == _SEG:
            return self.seg0, self.seg0 + SEG_TOKENS
        if slot in (_LOC_Y0, _LOC_X0):  # room for the far edge: at most 1022
            return self.loc0, self.loc0 + LOC_TOKENS - 1
        near = int(ids[-2]) - self.loc0  # y1 follows y0 by two tokens, x1 follows x0
        return self.loc0 + near + 1, self.loc0 + LOC_TOKENS


def consecutive_ids(tokenizer, kind: str, count: int, digits: int) -> int:
    """The id of ``<{kind}0...0>``; ValueError unless the ``count`` tokens of that kind have consecutive ids."""
    ids = tokenizer.convert_tokens_to_ids([f"<{kind}{i:0{digits}d}>" for i in range(count)])
    if ids != list(range(ids[0], ids[0] + count)):
        raise ValueError(f"the tokenizer's <{kind}> tokens are not {count} consecutive ids")
    return ids[0]


__all__ = ["LOC_DECODINGS", "AnswerContract", "consecutive_ids", "parse_prompt"]
