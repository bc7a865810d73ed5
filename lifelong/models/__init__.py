"""Models: the architecture table (`families.py`), module resolution and weight orientation
(`modules.py`), loading and fingerprints (`loading.py`), and the (prompt, answer) tokenization
convention every editor and metric shares (`tokenization.py`)."""
from .families import FAMILIES, Family
from .loading import context_length, fingerprint, load_model, resolve_model
from .modules import family_of, get_module, layer_path, num_layers

__all__ = ["FAMILIES", "Family", "context_length", "family_of", "fingerprint", "get_module", "layer_path",
           "load_model", "num_layers", "resolve_model"]
