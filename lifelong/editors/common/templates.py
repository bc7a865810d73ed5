"""Context templates: short model-generated prefixes under which an edit is trained, so that it holds in
context and not only for the bare prompt (WISE; MEMIT and ROME use sampled variants).

A template is a format string with one "{}" slot for the prompt. They are a function of the *unedited*
model, generated once per editor and kept in its state (never shared through the process).
"""
from __future__ import annotations

from typing import Sequence

import torch

from ...models.tokenization import pad, pad_id


@torch.no_grad()
def greedy_templates(model, tokenizer, seeds: Sequence[str], lengths: Sequence[int]) -> list[str]:
    """'{}' plus, per generation round, one greedy continuation of each seed (left-padded batch) + ' {}'."""
    device = next(model.parameters()).device
    ids, mask = pad([tokenizer(s)["input_ids"] for s in seeds], pad_id(tokenizer), side="left")
    templates = ["{}"]
    for n in lengths:
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=int(n),
                             num_beams=1, do_sample=False, pad_token_id=pad_id(tokenizer))
        for seq in out:
            text = tokenizer.decode(seq, skip_special_tokens=True)
            templates.append(text.replace("{", "{{").replace("}", "}}") + " {}")
    return templates
