"""UltraEdit (Gu et al. 2025): training-, subject- and memory-free lifelong editing.

    editor.py   the editor: capture, normalise, ridge solve, apply (and the math as pure functions)
    stats.py    the lifelong normalizer, with the reference's exact semantics
    presets.py  the published module selections, as data
"""
from .editor import UltraEditHparams, UltraEditor, pseudo_values, resolve_modules, ridge_solve
from .presets import PRESETS
from .stats import RunningStats

__all__ = ["PRESETS", "RunningStats", "UltraEditHparams", "UltraEditor", "pseudo_values", "resolve_modules",
           "ridge_solve"]
