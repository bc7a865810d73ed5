"""lifelong: a reproducible benchmark suite for lifelong model editing.

Importing the package sets offline-friendly defaults for the Hugging Face libraries
(nothing is ever fetched from a hub unless the user asks for a hub model explicitly).
"""
from __future__ import annotations

import os

# setdefault: a user who exports these differently keeps their choice.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

__version__ = "0.1.0"
