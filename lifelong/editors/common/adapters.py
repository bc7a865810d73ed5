"""Side modules installed in place of one projection (WISE's side memory, GRACE's codebook).

`Adapter` keeps the original module as the *main memory* and never writes to it: it re-registers the
original `weight` (and `bias`) Parameters under the same names, so `model.state_dict()` keys and values
are unchanged while it is installed, and `save_pretrained` writes the base weights. `install` and
`uninstall` swap it in and out of its parent.
"""
from __future__ import annotations

import torch
from torch import nn

from ...models.modules import get_module, is_conv1d


class Adapter(nn.Module):
    """Base of every side module: holds the original module outside the module tree, shares its
    parameters, and receives the model call's attention mask (`token_mask`, set by a hook)."""

    def __init__(self, original: nn.Module):
        super().__init__()
        self.__dict__["original"] = original  # not a child: model.state_dict() keys stay unchanged
        self.weight = original.weight        # the same Parameter objects (main memory, never written)
        self.bias = getattr(original, "bias", None)
        self.conv1d = is_conv1d(original)
        self.token_mask: torch.Tensor | None = None

    def main(self, x: torch.Tensor) -> torch.Tensor:
        """The original module's output."""
        return self.original(x)

    def mask_for(self, out: torch.Tensor) -> torch.Tensor | None:
        """The real-token mask for `out` ([B, S, ...]), or None when the call had no usable mask."""
        m = self.token_mask
        if m is None or out.dim() != 3 or m.dim() != 2 or m.shape[0] != out.shape[0] or m.shape[1] < out.shape[1]:
            return None
        return m[:, -out.shape[1]:].to(out.device)   # with a KV cache the mask also covers past tokens


def install(model: nn.Module, path: str, adapter: nn.Module) -> nn.Module:
    """Put `adapter` at `path`; returns the module it replaced."""
    parent_path, _, child = path.rpartition(".")
    parent = get_module(model, parent_path) if parent_path else model
    old = getattr(parent, child)
    setattr(parent, child, adapter)
    return old


def uninstall(model: nn.Module, path: str, original: nn.Module) -> None:
    """Put `original` back at `path`."""
    install(model, path, original)
