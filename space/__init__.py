"""The CheXanatomy Space (a Gradio app): one topic per module, read in this order.

* ``reading``: an uploaded file -> a grey radiograph the models can take (or a message for the user);
* ``selection``: the structures a request asks for (regions, picks, the cap) and their labels and colours;
* ``bundled_examples``: the examples shipped beside the app and their ground-truth masks;
* ``results``: running each model and shaping its answers (overlays, table, raw answers, timing);
* ``handler``: ``SpaceApp``, the request handler that chains the four;
* ``ui``: the Gradio Blocks around the handler, and the server;
* ``app``: the command line (``python space/app.py``, ``python -m space.app``) and the Hugging Face Spaces entry.

The Space imports only the core ``chexanatomy`` package and itself.
"""

import os

# Before gradio is imported (by any module here): no usage analytics, no version check, no Hub telemetry.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


class InputError(ValueError):
    """An upload or selection the app cannot use; the message is shown to the user as is."""
