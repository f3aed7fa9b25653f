"""The Gradio Blocks around a ``SpaceApp`` (upload, pickers, overlays, table, answers) and the server.

One Gradio internal is replaced while the UI is built: ``atomic_save_pil_to_cache`` (a race that truncated
downloads under load).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import gradio as gr
from gradio import processing_utils
from PIL import Image

from chexanatomy.inference import Segmenter

from .bundled_examples import EXAMPLES_DIR, Example, load_examples
from .handler import SpaceApp
from .results import table_headers
from .selection import ALL, DEFAULT_STRUCTURES, MAX_STRUCTURES, REGIONS, color_map, region_of, structure_label


def atomic_save_pil_to_cache(img: Image.Image, cache_dir: str, name: str = "image", format: str = "webp") -> str:
    """Gradio's ``processing_utils.save_pil_to_cache``, but the file appears atomically (temporary name + rename).

    Gradio 6 re-writes an output's content-addressed file in place on every request (truncate, then write), so a
    client still downloading the same file from an earlier identical request (two users clicking one example)
    gets a truncated body: "peer closed connection without sending complete message body", found by
    tests/test_space_load.py. After a rename a reader sees the old file or the new one, both complete and equal.
    """
    data = processing_utils.encode_pil_to_bytes(img, format)
    target = (Path(cache_dir) / processing_utils.hash_bytes(data) / f"{name}.{format}").resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{uuid.uuid4().hex}.{target.name}")
    temporary.write_bytes(data)
    os.replace(temporary, target)
    return str(target)


INTRO = """# CheXanatomy: chest X-ray anatomy from a vision-language model
A PaliGemma-architecture model answers `segment <structure>` with box and mask tokens; a U-Net baseline answers
beside it. Both were trained on digitally reconstructed radiographs rendered from CT. **Research demo, not for
clinical use.** Sides are the patient's: *left lung* is on the image's right in a PA view."""


def build_demo(
    vlm: Segmenter | None,
    unet: Segmenter | None,
    examples_dir: Path | None = EXAMPLES_DIR,
    max_structures: int = MAX_STRUCTURES,
    concurrency: int = 1,
    queue_size: int = 64,
) -> gr.Blocks:
    """The Space's UI around ``vlm`` and ``unet`` (either may be None), queued.

    Args:
        vlm: a VLM ``Segmenter`` (``chexanatomy.inference``) or None.
        unet: a U-Net ``Segmenter`` or None.
        examples_dir: bundled examples (``NAME.png`` + ``NAME.npz``), None for none.
        max_structures: cap on structures per request ("all" included).
        concurrency: requests processed at once (the models are not copied per worker).
        queue_size: waiting requests beyond which new ones are refused.
    """
    processing_utils.save_pil_to_cache = atomic_save_pil_to_cache  # overlays are written through it
    examples = load_examples(examples_dir)
    app = SpaceApp(vlm, unet, examples, max_structures)
    with gr.Blocks(title="CheXanatomy") as demo:
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column(scale=1):
                inputs, button = _input_components(app, examples)
            with gr.Column(scale=2):
                overlays, timing, notes = _result_components(app)
        table, answers = _detail_components(app)
        outputs = [*overlays, table, answers, timing, notes]
        button.click(app.segment, inputs, outputs, api_name="segment")
    demo.queue(default_concurrency_limit=concurrency, max_size=queue_size)
    return demo


def _input_components(app: SpaceApp, examples: list[Example]) -> tuple[list, gr.Button]:
    """File upload, region and structure pickers, the run button and the examples."""
    upload = gr.File(
        label="Radiograph (PNG, JPEG or DICOM incl. MONOCHROME1 / 16-bit)", type="filepath", elem_id="radiograph"
    )
    regions = gr.CheckboxGroup(
        [("all structures", ALL), *((r, r) for r in REGIONS)], label="Whole regions", elem_id="regions"
    )
    choices = [(f"{region_of(n)} · {structure_label(n)}", n) for n in app.offered]
    default = [n for n in DEFAULT_STRUCTURES if n in app.offered]
    picks = gr.Dropdown(
        choices,
        value=default,
        multiselect=True,
        label="Structures",
        elem_id="structures",
        info=f"Added to the regions; at most {app.max_structures} per request.",
    )
    button = gr.Button("Segment", variant="primary", elem_id="run")
    if examples:
        gr.Examples(
            [[str(e.image)] for e in examples],
            inputs=[upload],
            example_labels=[e.label for e in examples],
            label="Examples: real radiographs (no ground truth) and held-out renderings (with ground truth, Dice)",
            cache_examples=False,
        )
    return [upload, regions, picks], button


def _result_components(app: SpaceApp) -> tuple[list, gr.Textbox, gr.Textbox]:
    """Both overlays side by side (the U-Net's hidden without a U-Net), the time taken and the notes."""
    colours = color_map(app.offered)
    with gr.Row():
        overlays = [
            gr.AnnotatedImage(
                label=f"{title} overlay (click a legend entry to highlight it)",
                color_map=colours,
                visible=model is not None,
                elem_id=f"overlay-{title.lower().replace('-', '')}",
            )
            for title, model in app.slots
        ]
    timing = gr.Textbox(label="Time taken", elem_id="timing")
    notes = gr.Textbox(label="Notes", lines=2, elem_id="notes")
    return overlays, timing, notes


def _detail_components(app: SpaceApp) -> tuple[gr.Dataframe, gr.Textbox]:
    """The per-structure table (full width) and the VLM's raw answers."""
    table = gr.Dataframe(
        headers=table_headers(app.models),
        label="Per structure: area, box (y0, x0, y1, x1 px; y1/x1 exclusive), validity, Dice (examples only)",
        interactive=False,
        max_height=800,
        elem_id="table",
    )
    answers = gr.Textbox(label="Raw VLM answers (<loc> box + <seg> mask tokens)", lines=6, elem_id="answers")
    return table, answers


def launch(
    demo: gr.Blocks,
    host: str = "127.0.0.1",
    port: int | None = None,
    block: bool = True,
    examples_dir: Path | None = EXAMPLES_DIR,
):
    """Start the server (never a share link); ``block=False`` returns at once (tests, benchmarks)."""
    theme = gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
    )
    return demo.launch(
        server_name=host,
        server_port=port,
        share=False,
        show_error=True,
        prevent_thread_lock=not block,
        quiet=not block,
        allowed_paths=[str(examples_dir)] if examples_dir else None,
        max_file_size="128mb",
        ssr_mode=False,
        theme=theme,
    )
