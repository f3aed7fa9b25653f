"""Model cards for CheXanatomy models, rendered from ``python -m eval`` results and the training run's folder.

Run it as ``python -m model_card --results outputs/eval/results.json --model vlm --model_dir outputs/tiny_vlm``.
"""

from chexanatomy.results import load_results

from .card import push_card, render_card, write_card
from .inputs import read_model_folder

__all__ = ["load_results", "push_card", "read_model_folder", "render_card", "write_card"]
