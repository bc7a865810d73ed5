"""WISE (Wang et al., NeurIPS 2024): a side memory at one FFN value projection, routed by activation.

    editor.py   the editor: per-edit training loop, sharding, merging, state
    memory.py   the side-memory adapter, activation score, routing, margin loss, early stop
    cache.py    the prefix cache: the inner loop runs only the layers above the side memory
    data.py     the training rows of one edit, and where the side memory lives
    hparams.py  hyperparameters (reference defaults) and the cleaned-up variant
"""
from .editor import WiseEditor
from .hparams import CLEAN_VARIANT, WiseHparams

__all__ = ["CLEAN_VARIANT", "WiseEditor", "WiseHparams"]
