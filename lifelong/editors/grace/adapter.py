"""GRACE's adapter: the codebook installed in place of one projection.

The wrapped module always runs. Per input row, the query is the module's input at the row's *key token*,
the last prompt token. A row whose query hits an entry (nearest key within its radius) gets that entry's
value in place of the module's output at the positions `replacement` names; every other row is bitwise the
wrapped module's output. Rows are independent, so batches of any size and padding are fine.

Where is the key token? (G2: EasyEdit reused the last edit's position for every input.)
  * `prompt_ends` set (by the scorer through `GraceEditor.set_prompt_ends`, or by the editor while it
    trains): one column per row of the current input;
  * otherwise: a call that continues a KV cache (its attention mask is wider than its input) holds no
    prompt token, so nothing is replaced there (the prompt pass already put the value into the cache); a
    full call is queried at each row's last real token (the reference's default, `key_id = -1`).
"""
from __future__ import annotations

import torch
from torch import nn

from ...core.errors import LifelongError
from ..common.adapters import Adapter
from .codebook import Codebook


class GraceAdapter(Adapter):
    def __init__(self, original: nn.Module, codebook: Codebook, replacement: str = "replace_last"):
        super().__init__(original)
        self.codebook = codebook
        self.replacement = replacement
        self.prompt_ends: torch.Tensor | None = None
        # while the editor trains one entry: its index and the value tensor the optimiser updates
        self.train_index: int | None = None
        self.train_value: torch.Tensor | None = None
        # what the last forward did (inspection and tests): key column, hit and entry of each row
        self.last_positions: torch.Tensor | None = None
        self.last_hit: torch.Tensor | None = None
        self.last_index: torch.Tensor | None = None

    def key_positions(self, x: torch.Tensor) -> torch.Tensor | None:
        """The key column of each row of `x` ([B, S, d]), or None when the call holds no key token."""
        batch, width = x.shape[:2]
        if self.prompt_ends is not None:
            ends = torch.as_tensor(self.prompt_ends).to(x.device, torch.long).reshape(-1)
            if ends.numel() != batch:
                raise LifelongError(f"GRACE was told the prompt ends of {ends.numel()} rows, but the forward pass "
                                    f"has {batch}; the scorer must call set_prompt_ends before each batch")
            if bool(((ends < 0) | (ends >= width)).any()):
                raise LifelongError(f"GRACE prompt ends {ends.tolist()} lie outside the input's {width} columns")
            return ends
        mask = self.token_mask
        if mask is not None and mask.dim() == 2 and mask.shape[0] == batch:
            if mask.shape[1] > width:
                return None                                   # a cached step: the key token is in the past
            if mask.shape[1] == width:
                cols = torch.arange(width, device=x.device)
                real = mask.to(x.device) != 0
                last = torch.where(real, cols, torch.full_like(cols, -1)).amax(-1)
                return torch.where(last >= 0, last, torch.full_like(last, width - 1))
        return torch.full((batch,), width - 1, dtype=torch.long, device=x.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.main(x)
        self.last_positions = self.last_hit = self.last_index = None
        if not len(self.codebook):
            return out                                        # no edit yet: bitwise the wrapped module
        squeeze = x.dim() == 2
        if squeeze:
            x, out = x.unsqueeze(0), out.unsqueeze(0)
        positions = self.key_positions(x)
        if positions is not None:
            out = self._replace(x, out, positions)
        return out.squeeze(0) if squeeze else out

    def _replace(self, x: torch.Tensor, out: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(x.shape[0], device=x.device)
        query = x[rows, positions]                                          # [B, d_in]
        hit, index, _ = self.codebook.lookup(query)
        hit, index = hit.to(out.device), index.to(out.device)
        self.last_positions, self.last_hit, self.last_index = positions, hit, index
        if not bool(hit.any()):
            return out
        values = self.codebook.values.to(out.device)[index]                # [B, d_out]
        if self.train_value is not None:
            trained = (index == self.train_index)[:, None]
            values = torch.where(trained, self.train_value.reshape(1, -1).to(values.dtype), values)
        cols = torch.arange(out.shape[1], device=out.device)[None]          # [1, S]
        if self.replacement == "replace_last":
            where = cols == positions[:, None]
        elif self.replacement == "replace_all":
            where = torch.ones_like(cols, dtype=torch.bool).expand(out.shape[0], -1)
        elif self.replacement == "replace_prompt":                           # [:key], the key excluded (reference)
            where = cols < positions[:, None]
        else:
            raise LifelongError(f"unknown GRACE replacement {self.replacement!r}")
        where = where & hit[:, None]
        return torch.where(where[..., None], values[:, None, :].to(out.dtype), out)
