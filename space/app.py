"""CheXanatomy Space: a vision-language model segments chest X-ray anatomy, with a U-Net baseline beside it.

    python space/app.py                                    # bundled demonstration models, http://127.0.0.1:7860
    python space/app.py --vlm chexanatomy/paligemma2-3b-anatomy-448 --unet chexanatomy/unet-anatomy
    cd space && python app.py                              # as Hugging Face Spaces runs it

Upload a radiograph (PNG, JPEG or DICOM) or pick an example, choose structures, and both models answer: the
VLM writes each structure as ``<loc>`` box + ``<seg>`` mask tokens (shown raw), the U-Net predicts one channel per
structure. The examples are two real radiographs (no ground truth) and held-out corpus images with ground-truth masks,
whose table also shows Dice.

Bad input (the rules are in ``reading.py``) is a message to the user, never a crash. Sides are the patient's:
"left lung" is the patient's left lung, on the image's right in a PA view. This module is the command line; the
package docstring (``__init__.py``) lists the others in reading order.

The app imports only the core ``chexanatomy`` package; Gradio supplies the UI, queue and API.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys
from pathlib import Path


def _folder_as_package() -> str:
    """Import this folder as the package ``space`` when the app runs as a script (``python app.py`` on Spaces)."""
    here = Path(__file__).resolve().parent
    if "space" not in sys.modules:
        init = here / "__init__.py"
        spec = importlib.util.spec_from_file_location("space", init, submodule_search_locations=[str(here)])
        sys.modules["space"] = module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return "space"


if not __package__:
    __package__ = _folder_as_package()

from chexanatomy.inference import Segmenter, load_segmenter  # noqa: E402

from .bundled_examples import EXAMPLES_DIR  # noqa: E402
from .selection import MAX_STRUCTURES  # noqa: E402
from .ui import build_demo, launch  # noqa: E402

logger = logging.getLogger("chexanatomy.space")

HUB_MODELS = {"vlm": "chexanatomy/paligemma2-3b-anatomy-448", "unet": "chexanatomy/unet-anatomy"}


def load_model(name: str, kind: str, device: str | None = None) -> Segmenter | None:
    """A ``Segmenter`` for ``name`` (a folder, a Hub id, "bundled-vlm"/"bundled-unet" or "none" -> None).

    A bundled model missing from this installation (e.g. on Spaces) falls back to the Hub release ``HUB_MODELS``.

    Raises:
        FileNotFoundError: naming ``name`` when it is no model folder and no reachable Hub model (offline: not cached);
            a mistyped local path never goes to the Hub (``chexanatomy.locate``).
    """
    if name.lower() == "none":
        return None
    if name == f"bundled-{kind}":
        from chexanatomy.inference import bundled_model_path

        try:
            bundled_model_path(kind)
        except FileNotFoundError:
            logger.warning("no bundled %s in this installation; loading %s from the Hub", kind, HUB_MODELS[kind])
            name = HUB_MODELS[kind]
    return load_segmenter(name, device=device)


def make_parser() -> argparse.ArgumentParser:
    """Command-line options (model defaults from ``CHEXANATOMY_VLM``/``CHEXANATOMY_UNET``)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--vlm",
        default=os.environ.get("CHEXANATOMY_VLM", "bundled-vlm"),
        help="VLM folder, Hub id, 'bundled-vlm' or 'none'",
    )
    parser.add_argument(
        "--unet",
        default=os.environ.get("CHEXANATOMY_UNET", "bundled-unet"),
        help="U-Net folder, Hub id, 'bundled-unet' or 'none'",
    )
    parser.add_argument(
        "--host",
        default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        help="interface to listen on (Spaces sets GRADIO_SERVER_NAME=0.0.0.0)",
    )
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: CUDA when available)")
    parser.add_argument("--examples_dir", default=str(EXAMPLES_DIR))
    parser.add_argument("--max_structures", type=int, default=MAX_STRUCTURES)
    parser.add_argument("--concurrency", type=int, default=1, help="requests processed at once")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Load the models, build the UI and serve it until interrupted."""
    parser = make_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own start-up probes
    try:
        vlm, unet = load_model(args.vlm, "vlm", args.device), load_model(args.unet, "unet", args.device)
    except FileNotFoundError as error:
        parser.exit(2, f"error: {error}\n")  # a usage error: one line, no traceback
    demo = build_demo(vlm, unet, Path(args.examples_dir), args.max_structures, args.concurrency)
    logger.info("serving VLM=%s U-Net=%s on http://%s:%d", args.vlm, args.unet, args.host, args.port)
    launch(demo, args.host, args.port, examples_dir=Path(args.examples_dir))


if __name__ == "__main__":
    main()
