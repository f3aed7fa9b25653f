"""``evaluate`` wrapper around ``score_structures`` (``eval/scores.py``): per-structure Dice, IoU, HD95, box IoU.

Load it from its folder or its Hub repository; it needs ``evaluate``, ``numpy`` and ``scipy``, not this project::

    import evaluate
    metric = evaluate.load("eval/metrics/anatomy_segmentation")
    metric.compute(predictions=[pred_mask], references=[ref_mask], names=["lung_left"])

The folder is self-contained: ``evaluate`` copies this script and the modules it imports relatively into its module
cache. ``scores.py`` and ``masks.py`` beside it are generated copies of ``eval/scores.py`` and
``chexanatomy/masks.py`` (``python -m eval.metric_bundle``); edit those, not the copies.
"""

from __future__ import annotations

import datasets
import evaluate
import numpy as np

from .masks import Box
from .scores import score_structures

_DESCRIPTION = """
Per-structure segmentation scores for 2-D anatomy masks (chest radiograph structures such as `lung_left`,
`heart`, `clavicle_right`): Dice, IoU, 95th-percentile Hausdorff distance (pixels and, given a pixel size,
millimetres), and box IoU, averaged per structure, then macro (mean over structures) and micro (pooled
pixels). Answers the model could not decode are scored as empty predictions and counted as invalid.
Empty-mask rule: Dice/IoU/box IoU are 1 when prediction and reference are both empty and 0 when exactly one
is; HD95 is undefined (None) when either is empty and is counted in `hd95_undefined`, never averaged as 0.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of predicted masks, each [H, W] (nested lists or numpy arrays of bool or 0/1 ints,
        indexed (y, x)); `None` for an answer that could not be decoded.
    references: list of reference masks, each [H, W], same shape as its prediction.
    names: list of structure names, one per mask (our vocabulary, patient sides: `lung_left` is the patient's
        left lung, on the image's right in a PA view). Default: every mask is called "structure".
    valid: optional list of bools; False marks an answer that could not be decoded (scored as empty).
    pred_boxes: optional list of predicted boxes (y0, x0, y1, x1), y0/x0 inclusive, y1/x1 exclusive, or None.
    spacing_mm: optional pixel size (row_mm, col_mm) shared by all masks, for HD95 in millimetres.
Returns:
    {"per_structure": {name: {"dice", "iou", "hd95_px", "hd95_mm", "box_iou", "count", "invalid_rate",
    "hd95_undefined"}}, "macro": {"dice", "iou", "hd95_px", "hd95_mm", "box_iou", "invalid_rate"},
    "micro": {"dice", "iou"}, "count": int, "invalid_rate": float}
Examples:
    >>> import evaluate, numpy as np
    >>> metric = evaluate.load("eval/metrics/anatomy_segmentation")
    >>> ref = np.zeros((8, 8), bool); ref[2:6, 2:6] = True
    >>> out = metric.compute(predictions=[ref], references=[ref], names=["heart"])
    >>> out["per_structure"]["heart"]["dice"]
    1.0
"""

_CITATION = """@misc{gatidis2026chexanatomy,
  title  = {CheXanatomy},
  author = {Gatidis, Sergios and Langlotz, Curtis P. and Bluethgen, Christian},
  year   = {2026},
}"""  # = chexanatomy.CITATION (tests/test_eval_scores.py), written out: this folder cannot import the project

_MASK = datasets.List(datasets.List(datasets.Value("bool")))


def _to_bool_mask(mask):
    """A mask as a bool numpy [H, W] array (``None`` stays ``None``).

    Arrow refuses a batch that mixes numpy dtypes (bool and uint8 masks side by side), so every mask is cast
    to bool before ``evaluate`` validates and stores it.
    """
    return None if mask is None else np.asarray(mask).astype(bool, copy=False)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class AnatomySegmentation(evaluate.Metric):
    """Per-structure anatomy mask scores; see ``score_structures`` (``scores.py``) for the exact definitions."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": _MASK, "references": _MASK}),
            reference_urls=["https://github.com/Project-MONAI/MONAI/blob/dev/monai/metrics/hausdorff_distance.py"],
        )

    def add_batch(self, *, predictions=None, references=None, **kwargs):
        """Add masks to the stack, cast to bool first (see :func:`_to_bool_mask`)."""
        predictions = None if predictions is None else [_to_bool_mask(p) for p in predictions]
        references = None if references is None else [_to_bool_mask(r) for r in references]
        super().add_batch(predictions=predictions, references=references, **kwargs)

    def add(self, *, prediction=None, reference=None, **kwargs):
        """Add one mask pair to the stack, cast to bool first (see :func:`_to_bool_mask`)."""
        super().add(prediction=_to_bool_mask(prediction), reference=_to_bool_mask(reference), **kwargs)

    def _compute(
        self,
        predictions,
        references,
        names=None,
        valid=None,
        pred_boxes: list[Box | None] | None = None,
        spacing_mm=None,
    ) -> dict:
        n = len(references)
        names = ["structure"] * n if names is None else list(names)
        valid = [True] * n if valid is None else list(valid)
        for label, values in (("names", names), ("valid", valid), ("pred_boxes", pred_boxes)):
            if values is not None and len(values) != n:
                raise ValueError(f"{label} has {len(values)} entries but there are {n} references")
        records = []
        for i in range(n):
            record = {
                "name": names[i],
                "pred": None if predictions[i] is None else np.asarray(predictions[i], dtype=bool),
                "ref": np.asarray(references[i], dtype=bool),
                "valid": bool(valid[i]),
            }
            if pred_boxes is not None:
                record["pred_box"] = pred_boxes[i]
            records.append(record)
        return score_structures(records, spacing_mm=spacing_mm)
