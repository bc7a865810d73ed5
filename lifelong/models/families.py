"""Architecture knowledge as data: one `Family` record per model type, holding every module path an
editor may need. Editors ask the record (`family.mlp_out`, `family.final_norm`, ...) and never spell a
path themselves, so supporting a new architecture is one entry in `FAMILIES`.

Paths are attribute paths: `layers`, `body`, `final_norm` and `lm_head` from the model root; the
per-layer modules (`mlp_*`, `attn_out`, `residual_input`) relative to one decoder layer.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..core.errors import LifelongError


@dataclass(frozen=True)
class Family:
    name: str
    body: str                     # the decoder stack without the LM head (returns hidden states)
    layers: str                   # the list of decoder layers
    mlp_out: str                  # the FFN value / down projection (input: the activated hidden state)
    mlp_in: str                   # the FFN input (up) projection
    mlp_gate: str | None          # the gate projection of gated FFNs (LLaMA-style), else None
    attn_out: str                 # the attention output projection
    final_norm: str               # the norm after the last layer
    residual_input: str | None    # the module whose input is the residual stream mlp_out's output is added
                                  # to (None: a parallel block, GPT-J, where attention and FFN share it)
    activation_attr: str          # the config attribute naming the FFN activation
    lm_head: str = "lm_head"
    conv1d: bool = False          # GPT-2's Conv1D stores weights as [d_in, d_out], nn.Linear as [d_out, d_in]
    positions: Literal["absolute", "rotary"] = "rotary"   # learned absolute positions make padding side matter

    @property
    def absolute_positions(self) -> bool:
        return self.positions == "absolute"

    @property
    def mlp_projections(self) -> tuple[str, ...]:
        """Every FFN projection of a layer, the down projection first."""
        return tuple(p for p in (self.mlp_out, self.mlp_gate, self.mlp_in) if p)

    def role(self, name: str) -> str:
        """A per-layer module by role: `mlp_out`, `mlp_in`, `mlp_gate` or `attn_out`."""
        roles = {"mlp_out": self.mlp_out, "mlp_in": self.mlp_in, "mlp_gate": self.mlp_gate, "attn_out": self.attn_out}
        if name not in roles:
            raise LifelongError(f"unknown module role {name!r}; known roles: {', '.join(roles)}")
        if roles[name] is None:
            raise LifelongError(f"{self.name} layers have no {name} module")
        return roles[name]


_LLAMA_LIKE = dict(body="model", layers="model.layers", mlp_out="mlp.down_proj", mlp_in="mlp.up_proj",
                   mlp_gate="mlp.gate_proj", attn_out="self_attn.o_proj", final_norm="model.norm",
                   residual_input="post_attention_layernorm", activation_attr="hidden_act")

FAMILIES: dict[str, Family] = {
    "gpt2": Family("gpt2", body="transformer", layers="transformer.h", mlp_out="mlp.c_proj", mlp_in="mlp.c_fc",
                   mlp_gate=None, attn_out="attn.c_proj", final_norm="transformer.ln_f", residual_input="ln_2",
                   activation_attr="activation_function", conv1d=True, positions="absolute"),
    "gptj": Family("gptj", body="transformer", layers="transformer.h", mlp_out="mlp.fc_out", mlp_in="mlp.fc_in",
                   mlp_gate=None, attn_out="attn.out_proj", final_norm="transformer.ln_f", residual_input=None,
                   activation_attr="activation_function"),
    "llama": Family("llama", **_LLAMA_LIKE),
    "mistral": Family("mistral", **_LLAMA_LIKE),
    "qwen2": Family("qwen2", **_LLAMA_LIKE),
    "gemma": Family("gemma", **_LLAMA_LIKE),
    "phi3": Family("phi3", **{**_LLAMA_LIKE, "mlp_in": "mlp.gate_up_proj", "mlp_gate": None}),  # fused gate+up
}


def family_named(model_type: str | None) -> Family:
    if model_type not in FAMILIES:
        raise LifelongError(f"model type {model_type!r} is not supported; supported: {sorted(FAMILIES)} "
                            "(a new architecture is one entry in lifelong/models/families.py)")
    return FAMILIES[model_type]
