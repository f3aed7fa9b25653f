"""Puts this checkout's top-level parts on ``sys.path`` for the bench scripts, which run as ``python bench/<name>.py``.

The parts (``dataset_builder``, ``train``, ``eval``, ``model_card``, ``space``) are top-level folders of the repository;
installed, they are ``chexanatomy.<part>`` (pyproject's ``package-dir``). ``python -m <part>`` from the repository root
finds them through the working directory; a script in ``bench/`` has ``bench/`` there instead, so it imports this
module first (``import checkout``).
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
