"""The metric's widget, as a Hub metric Space runs it (``python app.py``): a predicted and a reference mask -> scores.

This is the ``app.py`` of the ``evaluate`` metric template, with one change: the template's
``evaluate.utils.launch_gradio_widget(module)`` builds its page with ``gr.inputs``/``gr.outputs``, which gradio removed
in 4.0 (it fails on the gradio of the card's ``sdk_version``), and it offers one table cell per input, where a mask
cannot be entered. Here the two masks are images (white = inside; anything brighter than half the image's maximum),
and the result is the metric's own output for that one structure.

    python app.py        # http://127.0.0.1:7860, from this folder (needs requirements.txt and gradio)
"""

from __future__ import annotations

from pathlib import Path

import evaluate
import gradio as gr
import numpy as np

HERE = Path(__file__).resolve().parent
# The script's path, not the folder's: on a Space the folder is named after the Space's checkout, not the metric.
metric = evaluate.load(str(HERE / "anatomy_segmentation.py"))


def as_mask(image: np.ndarray | None) -> np.ndarray | None:
    """An uploaded image [H, W] or [H, W, C] as a bool mask [H, W]: brighter than half its maximum (None: no upload)."""
    if image is None:
        return None
    grey = np.asarray(image, dtype=np.float32)
    grey = grey[..., :3].mean(axis=-1) if grey.ndim == 3 else grey
    return grey > grey.max() / 2 if grey.max() > 0 else np.zeros(grey.shape, dtype=bool)


def score(prediction: np.ndarray | None, reference: np.ndarray | None, name: str, pixel_mm: float) -> dict:
    """The metric's result for one structure; no prediction is scored as an undecodable (empty) one."""
    ref, pred = as_mask(reference), as_mask(prediction)
    if ref is None:
        raise gr.Error("Upload a reference mask.")
    if pred is not None and pred.shape != ref.shape:
        raise gr.Error(f"The masks differ in size: prediction {pred.shape[::-1]}, reference {ref.shape[::-1]} (W, H).")
    spacing = (pixel_mm, pixel_mm) if pixel_mm and pixel_mm > 0 else None
    return metric.compute(predictions=[pred], references=[ref], names=[name.strip() or "structure"], spacing_mm=spacing)


def readme_body() -> str:
    """The metric card without its YAML header, shown under the widget."""
    text = (HERE / "README.md").read_text(encoding="utf-8")
    return text.split("\n---\n", 1)[1] if text.startswith("---\n") else text


demo = gr.Interface(
    fn=score,
    inputs=[
        gr.Image(type="numpy", image_mode="L", label="predicted mask (white = inside; empty: no answer)"),
        gr.Image(type="numpy", image_mode="L", label="reference mask"),
        gr.Textbox(value="heart", label="structure"),
        gr.Number(value=0, label="pixel size in mm (0: unknown; HD95 then in pixels only)"),
    ],
    outputs=gr.JSON(label="scores"),
    title="Metric: anatomy_segmentation",
    description=metric.info.description,
    article=readme_body(),
    flagging_mode="never",
    api_name="score",
)

if __name__ == "__main__":
    demo.launch()
