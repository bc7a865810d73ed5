"""What editing does to the rest of the model: held-out perplexity and retained knowledge (spec baselines.md §9).

Measured on the unedited model, then after every block's edits (and at every curve checkpoint), from
params.yaml `heldout`:

* heldout_ppl: exp(sum NLL / sum tokens) over a fixed set of held-out texts, every token after a text's first
  scored, padding excluded. Each text is cut to `max_tokens` tokens (the documented policy; the count of cut
  texts is recorded). The default set is CounterFact's train split written out as true-fact sentences
  (prompt + ground truth): no run edits it, and neither the layer-statistics corpus nor any locality probe
  or pool holds it.
* heldout_ppl_ratio: heldout_ppl after the edits / before any edit (1 = unchanged; the spec's drift is ratio - 1).
* knowledge_retained: teacher-forced accuracy on facts the unedited model knows: of `fact_candidates` records of
  `heldout.facts` from record `facts_start` on, those whose prompt -> ground truth it gets wholly right before any
  edit, at most `n_facts`, never edited. None when the model knows none (the testbed models never saw them). The
  default is CounterFact's train split after the held-out texts (cloze prompts: SmolLM2-135M-Instruct answers 23 of
  500 wholly right). ZsRE's train split, phrased as questions, gives none: after "?" the model's first answer
  token is never the gold one (0 of 500, though its mean token accuracy is .17).

A file of the set that is absent from the data directory leaves that part unmeasured (None), and the summary's
`heldout.absent` says which: the testbed's runs need no real data.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from ..core.config import fill
from ..core.errors import MissingDataError
from ..models.modules import logits_at
from ..models.tokenization import pad, pad_id
from .teacher_forced import PromptEnds, score_pairs


@dataclass(frozen=True)
class HeldoutConfig:
    """params.yaml `heldout`."""

    texts: dict = field(default_factory=dict)    # a dataset entry; each record gives "prompt answer" (ground truth)
    n_texts: int = 100
    max_tokens: int = 128
    facts: dict = field(default_factory=dict)    # a dataset entry; prompt -> ground truth (else target)
    fact_candidates: int = 500
    facts_start: int = 0                         # the first candidate record (past the texts when they share a file)
    n_facts: int = 50
    batch_size: int = 32

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "HeldoutConfig | None":
        section = params.get("heldout")
        return None if not section else fill(cls, dict(section), where="params.yaml heldout")


@dataclass
class HeldoutSet:
    """The fixed texts and known facts of one run (what a checkpoint keeps: `facts` is chosen before editing)."""

    texts: list[str]
    facts: list[tuple[str, str]]
    pre: dict[str, float | None] = field(default_factory=dict)   # the unedited model's values
    texts_cut: int = 0
    tokens: int = 0
    fact_candidates: int = 0
    absent: list[str] = field(default_factory=list)              # the parts whose file is not in the data dir

    def describe(self) -> dict[str, Any]:
        return {"texts": len(self.texts), "tokens": self.tokens, "texts_cut": self.texts_cut,
                "fact_candidates": self.fact_candidates, "known_facts": len(self.facts), "absent": self.absent}


def build(config: HeldoutConfig, params: Mapping[str, Any], model, tokenizer, *,
          max_length: int | None, prompt_ends: PromptEnds = None) -> HeldoutSet:
    """Load the texts and choose the known facts on `model`, which must still be unedited."""
    from ..data import load_entry

    absent: list[str] = []

    def records(part: str, entry: dict, start: int, count: int) -> list:
        if not entry:
            return []
        try:
            source = load_entry(f"heldout.{part}", entry, params, where=f"params.yaml heldout.{part}")
            start = min(start, len(source))
            return list(source.records(start, min(start + count, len(source))))   # a smaller file gives what it holds
        except MissingDataError:
            absent.append(part)
            return []

    texts = [_text(r) for r in records("texts", config.texts, 0, config.n_texts)]
    candidates = [(r.prompt, r.ground_truth or r.target)
                  for r in records("facts", config.facts, config.facts_start, config.fact_candidates)]
    known = []
    if candidates:
        accuracy = score_pairs(model, tokenizer, candidates, batch_size=config.batch_size * 8, max_length=max_length,
                               prompt_ends=prompt_ends).accuracy
        known = [pair for pair, acc in zip(candidates, accuracy) if acc == 1.0][:config.n_facts]
    held = HeldoutSet(texts, known, fact_candidates=len(candidates), absent=absent)
    limit = min(config.max_tokens, max_length or config.max_tokens)
    lengths = [len(ids) for ids in tokenizer(texts)["input_ids"]] if texts else []
    held.texts_cut = sum(n > limit for n in lengths)
    held.tokens = sum(min(n, limit) - 1 for n in lengths)
    held.pre = measure(held, model, tokenizer, config, max_length=max_length, prompt_ends=prompt_ends, pre=None)
    return held


def _text(record) -> str:
    return f"{record.prompt} {record.ground_truth or record.target}".strip()


def measure(held: HeldoutSet, model, tokenizer, config: HeldoutConfig, *, max_length: int | None,
            prompt_ends: PromptEnds = None, pre: dict | None) -> dict[str, float | None]:
    """heldout_ppl, heldout_ppl_ratio (against `pre`; None for the unedited pass) and knowledge_retained."""
    out: dict[str, float | None] = {"heldout_ppl": None, "heldout_ppl_ratio": None, "knowledge_retained": None}
    if held.texts:
        out["heldout_ppl"] = text_perplexity(model, tokenizer, held.texts, max_tokens=min(
            config.max_tokens, max_length or config.max_tokens), batch_size=config.batch_size)
        if pre and pre.get("heldout_ppl"):
            out["heldout_ppl_ratio"] = out["heldout_ppl"] / pre["heldout_ppl"]
    if held.facts:
        out["knowledge_retained"] = float(score_pairs(model, tokenizer, held.facts, batch_size=config.batch_size * 8,
                                                      max_length=max_length, prompt_ends=prompt_ends).accuracy.mean())
    return out


@torch.no_grad()
def text_perplexity(model, tokenizer, texts: list[str], *, max_tokens: int, batch_size: int = 32) -> float:
    """exp(sum NLL / sum tokens) over `texts`, each cut to its first `max_tokens` tokens; batching and padding
    do not change it (right padding, pad positions never scored)."""
    encoded = sorted((ids[:max_tokens] for ids in tokenizer(texts)["input_ids"]), key=len)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    nll, count = 0.0, 0
    try:
        for start in range(0, len(encoded), batch_size):
            ids, mask = pad(encoded[start:start + batch_size], pad_id(tokenizer))
            ids, mask = ids.to(device), mask.to(device)
            scored = torch.zeros_like(mask, dtype=torch.bool)
            scored[:, :-1] = mask[:, 1:].bool()      # position t predicts token t + 1
            logits = logits_at(model, {"input_ids": ids, "attention_mask": mask}, scored).float()
            nll += F.cross_entropy(logits, ids[:, 1:][scored[:, :-1]], reduction="sum").item()
            count += int(scored.sum())
    finally:
        model.train(was_training)
    return float(np.exp(nll / max(1, count)))
