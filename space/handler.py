"""``SpaceApp``: the request handler behind the UI (read, select, run, shape), with bad input as a message."""

from __future__ import annotations

import logging

import gradio as gr
import numpy as np

from chexanatomy.inference import Segmenter

from . import InputError
from .bundled_examples import Example, file_sha256, load_ground_truth
from .reading import fit_for_inference, read_upload
from .results import overlay, raw_answers, run_model, table_rows, timing_text
from .selection import coverage_notes, offered_structures, selected_structures

logger = logging.getLogger("chexanatomy.space")


class SpaceApp:
    """The models, the examples' ground truth and the request handler behind the UI.

    Args:
        vlm: a VLM ``Segmenter`` or None.
        unet: a U-Net ``Segmenter`` or None (at least one of the two).
        examples: bundled examples whose uploads (matched by content hash) get Dice columns.
        max_structures: cap on structures per request.
    """

    def __init__(self, vlm: Segmenter | None, unet: Segmenter | None, examples: list[Example], max_structures: int):
        self.slots = [("VLM", vlm), ("U-Net", unet)]
        self.models = [(title, model) for title, model in self.slots if model is not None]
        if not self.models:
            raise ValueError("the Space needs a VLM, a U-Net or both")
        self.offered = offered_structures([m for _, m in self.models])
        self.truth_files = {file_sha256(e.image): e.masks for e in examples if e.masks is not None}
        self.max_structures = max_structures

    def segment(self, file: str | None, regions: list[str] | None, picks: list[str] | None) -> tuple:
        """The click handler: (VLM overlay, U-Net overlay, table, raw answers, time, notes); bad input -> gr.Error."""
        try:
            return self._segment(file, regions, picks)
        except InputError as error:
            logger.info("refused: %s", error)
            raise gr.Error(str(error), title="Cannot segment this input", print_exception=False) from None

    def _segment(self, file: str | None, regions: list[str] | None, picks: list[str] | None) -> tuple:
        if not file:
            raise InputError("No radiograph: upload a PNG, JPEG or DICOM file, or click an example first.")
        names, notes = selected_structures(regions, picks, self.offered, self.max_structures)
        image, read_notes = read_upload(file)
        image, fit_notes = fit_for_inference(image)
        notes += read_notes + fit_notes + coverage_notes(names, self.models)
        for note in notes:
            gr.Warning(note)
        truth = self.ground_truth(file, image.size)
        if truth:
            notes.append("Bundled example: Dice against its ground-truth masks is in the table.")
        results = {title: run_model(title, model, image, names) for title, model in self.models}
        logger.info("%d structures: %s", len(names), timing_text(list(results.values()), image.size))
        overlays = [overlay(image, results.get(title)) for title, _ in self.slots]
        found = list(results.values())
        table = table_rows(names, found, truth)
        return (*overlays, table, raw_answers(found), timing_text(found, image.size), "\n".join(notes))

    def ground_truth(self, file: str, size: tuple[int, int]) -> dict[str, np.ndarray]:
        """Ground-truth masks when ``file`` is a bundled example (same bytes), else {}."""
        masks = self.truth_files.get(file_sha256(file))
        return load_ground_truth(masks, size) if masks else {}
