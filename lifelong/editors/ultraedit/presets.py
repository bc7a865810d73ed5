"""UltraEdit's published module selections (spec ultraedit.md §1.2 / §2), as data.

A preset says *which layers* get which module *role* (`mlp_out`, `mlp_in`, `mlp_gate`: see
models/families.py); where a role lives in the model is the family's business. A preset chooses the
modules only; lr stays an ordinary hparam (the authors use 1e-6 everywhere).

name -> (model_type, number of layers, ((role, layers), ...)); the order is the normalizer's update order.
"""
from __future__ import annotations

PRESETS: dict[str, tuple[str, int, tuple[tuple[str, tuple[int, ...]], ...]]] = {
    "gptj-6b": ("gptj", 28, (("mlp_out", tuple(range(18, 27))),)),
    "gptj-6b-fever": ("gptj", 28, (("mlp_out", (25, 26)),)),
    "gptj-6b-wikibigedit": ("gptj", 28, (("mlp_out", tuple(range(19, 27))),)),
    "llama3-8b": ("llama", 32, (("mlp_gate", tuple(range(11, 16))), ("mlp_in", tuple(range(18, 25))))),
    "llama3-8b-fever": ("llama", 32, (("mlp_gate", tuple(range(22, 31))), ("mlp_in", tuple(range(22, 31))))),
    "mistral-7b": ("mistral", 32, (("mlp_out", (29, 30)),)),
    "qwen2.5-7b": ("qwen2", 28, (("mlp_gate", tuple(range(18, 27))), ("mlp_in", tuple(range(18, 27))))),
    "qwen2.5-7b-wikibigedit": ("qwen2", 28, (("mlp_in", tuple(range(19, 27))), ("mlp_gate", tuple(range(19, 27))))),
    # GPT-2 has no official configuration; the spec's recommendation (c_proj, upper-middle layers).
    "gpt2-small": ("gpt2", 12, (("mlp_out", (7, 8, 9, 10)),)),
    "gpt2-xl": ("gpt2", 48, (("mlp_out", tuple(range(31, 47))),)),
}
