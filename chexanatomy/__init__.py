"""CheXanatomy core: the vocabulary, mask-token codec and inference API shared by every part of the release.

The core imports no application package (``dataset_builder``, ``train``, ``eval``, ``model_card``,
``space``); they all import it.
"""

__version__ = "0.1.0"

# How to cite CheXanatomy: every card (model, dataset) and the evaluate metric show this entry.
CITATION = """@misc{gatidis2026chexanatomy,
  title  = {CheXanatomy},
  author = {Gatidis, Sergios and Langlotz, Curtis P. and Bluethgen, Christian},
  year   = {2026},
}"""
