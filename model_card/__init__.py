"""Model cards for CheXanatomy models, rendered from ``python -m eval`` results and the training run's folder.

Run it as ``python -m model_card --results outputs/eval/results.json --model vlm --model_dir outputs/tiny_vlm``.
"""

from .card import load_results, push_card, read_model_folder, render_card, write_card

__all__ = ["load_results", "push_card", "read_model_folder", "render_card", "write_card"]
