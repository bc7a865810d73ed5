"""GRACE (Hartvigsen et al., NeurIPS 2023): a codebook of (key, value, radius, label) entries at one projection.

    editor.py    the editor: per-edit codebook step and value training, state, report
    adapter.py   the adapter: the query at each row's last prompt token, lookup, replacement
    codebook.py  the pure codebook arithmetic: distances, add / split / expand / keep, label matching
    hparams.py   hyperparameters (EasyEdit's LLaMA-2-7B row) and where the codebook lives
"""
from .editor import GraceEditor
from .hparams import GraceHparams

__all__ = ["GraceEditor", "GraceHparams"]
