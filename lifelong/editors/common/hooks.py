"""Forward hooks every editor needs, written once: capture what flows through modules, stop a forward
pass early, and hand the model call's attention mask to an installed adapter.

All of them are context managers (or return removable handles), so no hook outlives the call that
needed it.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Mapping

import torch
from torch import nn

from ...core.errors import LifelongError


class Captured(dict):
    """path -> (module input, module output) of the latest forward pass."""


@contextmanager
def capture(modules: Mapping[str, nn.Module], *, outputs_require_grad: bool = False) -> Iterator[Captured]:
    """Record each module's first positional input and its output during the forward passes inside the block.

    With `outputs_require_grad`, an output that does not require grad (no trained parameter upstream) is
    replaced by a leaf that does, so `torch.autograd.grad(loss, outputs)` gives value gradients without any
    weight ever requiring grad (UltraEdit). A module that runs twice in one pass is an error: its key and
    value would be ambiguous.
    """
    store = Captured()

    def hook_for(path: str):
        def hook(module, args, output):
            if path in store:
                raise LifelongError(f"{path} runs more than once per forward pass; cannot edit it")
            if outputs_require_grad and not output.requires_grad:
                output = output.detach().requires_grad_(True)
            store[path] = (args[0].detach(), output)
            return output
        return hook

    handles = [module.register_forward_hook(hook_for(path)) for path, module in modules.items()]
    try:
        yield store
    finally:
        for handle in handles:
            handle.remove()


class _Stop(Exception):
    """Raised by a pre-hook to end a forward pass early."""


@contextmanager
def stop_before(module: nn.Module) -> Iterator[None]:
    """Inside the block, a forward pass ends (silently) when it reaches `module`: what lies above is never
    computed. Use it to record activations of lower layers without paying for the rest of the model."""
    def stop(mod, args):
        raise _Stop

    handle = module.register_forward_pre_hook(stop)
    try:
        yield
    except _Stop:
        pass
    finally:
        handle.remove()


def share_attention_mask(model: nn.Module, adapter: nn.Module):
    """Every model call sets `adapter.token_mask` to its 2-D attention mask (None without one), so an
    adapter deep inside the model can pool over real tokens only. Returns the hook handle."""
    def hook(module, args, kwargs):
        mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
        adapter.token_mask = mask if isinstance(mask, torch.Tensor) and mask.dim() == 2 else None

    return model.register_forward_pre_hook(hook, with_kwargs=True)
