"""Context templates: short model-generated prefixes under which an edit is trained, so that it holds in
context and not only for the bare prompt (WISE; MEMIT and ROME use sampled variants).

A template is a format string with one "{}" slot for the prompt. They are a function of the *unedited*
model, generated once per editor and kept in its state (never shared through the process).
"""
from __future__ import annotations

import unicodedata
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


@torch.no_grad()
def sampled_templates(model, tokenizer, seeds: Sequence[str], *, max_length: int = 10, top_k: int = 5,
                      seed: int = 0) -> list[str]:
    """MEMIT/ROME's context templates: per seed one top-k *sampled* continuation, at most `max_length`
    tokens long with the seed (and a BOS, if the tokenizer adds one) included, as the reference's
    `max_out_len`. Braces become spaces and ". {}" is appended. The list does not include the bare "{}".

    Sampling uses its own generator seeded with `seed`, so the result depends on the model and the seed only
    (no global RNG is read or advanced). Generation does not stop at EOS (nor does the reference's);
    special tokens are dropped when decoding."""
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(int(seed))
    templates = []
    for text in seeds:
        ids = list(tokenizer(text)["input_ids"])
        while len(ids) < max_length:
            logits = model(input_ids=torch.tensor([ids], device=device), use_cache=False).logits[0, -1].float()
            top = torch.topk(logits.cpu(), min(top_k, logits.shape[-1]))
            choice = torch.multinomial(torch.softmax(top.values, -1), 1, generator=gen)
            ids.append(int(top.indices[choice]))
        decoded = unicodedata.normalize("NFKD", tokenizer.decode(ids, skip_special_tokens=True)).replace("\n\n", " ")
        templates.append(decoded.replace("{", " ").replace("}", " ") + ". {}")
    return templates
