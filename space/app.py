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

import importlib.util
import logging
import os
import sys
from dataclasses import dataclass, field
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

from chexanatomy.cli import MISSING_INPUT, parse_config, prog_name, run_main  # noqa: E402
from chexanatomy.inference import Segmenter, load_segmenter  # noqa: E402
from chexanatomy.locate import model_source  # noqa: E402

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
        ValueError: for the other kind's bundled name (``--vlm bundled-unet``).
    """
    try:
        source = model_source(name, kind)
    except FileNotFoundError:
        logger.warning("no bundled %s in this installation; loading %s from the Hub", kind, HUB_MODELS[kind])
        source = HUB_MODELS[kind]
    return None if source is None else load_segmenter(source, device=device)


def _env(variable: str, default: str, text: str, kind=str):
    """A field whose default is read from the environment ``variable`` when the config is made."""
    return field(default_factory=lambda: kind(os.environ.get(variable, default)), metadata={"help": text})


@dataclass
class SpaceConfig:
    """Options of ``python space/app.py`` (defaults from ``CHEXANATOMY_VLM``/``CHEXANATOMY_UNET`` and Gradio's)."""

    vlm: str = _env("CHEXANATOMY_VLM", "bundled-vlm", "VLM folder, Hub id, 'bundled-vlm' or 'none' (CHEXANATOMY_VLM).")
    unet: str = _env("CHEXANATOMY_UNET", "bundled-unet", "U-Net folder, Hub id, 'bundled-unet' or 'none'.")
    host: str = _env("GRADIO_SERVER_NAME", "127.0.0.1", "Interface to listen on (Spaces sets 0.0.0.0).")
    port: int = _env("GRADIO_SERVER_PORT", "7860", "Port to listen on (GRADIO_SERVER_PORT).", int)
    device: str = field(default="auto", metadata={"help": "auto (cuda when available), cpu or cuda."})
    examples_dir: str = field(default=str(EXAMPLES_DIR), metadata={"help": "Folder of the example radiographs."})
    max_structures: int = field(default=MAX_STRUCTURES, metadata={"help": "Structures one request may ask for."})
    concurrency: int = field(default=1, metadata={"help": "Requests processed at once."})

    def __post_init__(self):
        for kind in ("vlm", "unet"):
            try:
                model_source(getattr(self, kind), kind)  # the other kind's bundled name is a usage error
            except FileNotFoundError:
                pass  # a bundled model this installation lacks: load_model falls back to the Hub


def main(argv: list[str] | None = None) -> int:
    """``python space/app.py`` / ``chexanatomy-space``: serve until interrupted; 2 on a usage error (one line)."""
    return run_main(_main, argv, errors=MISSING_INPUT)


def _main(argv: list[str]) -> int:
    config = parse_config(SpaceConfig, argv, prog_name("space.app"), __doc__)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own start-up probes
    vlm, unet = load_model(config.vlm, "vlm", config.device), load_model(config.unet, "unet", config.device)
    demo = build_demo(vlm, unet, Path(config.examples_dir), config.max_structures, config.concurrency)
    logger.info("serving VLM=%s U-Net=%s on http://%s:%d", config.vlm, config.unet, config.host, config.port)
    launch(demo, config.host, config.port, examples_dir=Path(config.examples_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
