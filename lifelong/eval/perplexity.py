"""Perplexity metrics, from the mean token NLL of an answer given its prompt (teacher-forced).

* `target_perplexity`: WISE's Hallucination Rel, exp(mean token NLL) of the target given the prompt,
  per edit. `PerplexityScores.summary()` reports the unclipped arithmetic mean over edits (what the
  WISE code reports) AND the mean with each edit's PPL clipped at 100 (spec wise.md B13, the clip
  the WISE author suggests in #531), plus the median.
* `temporal_ood`: WISE's Temporal OOD generalisation, paper Eq. 10 (spec wise.md §3.4): per edit the
  indicator [ L(y_ood | x_e) < delta ], L the mean token NLL of the OOD text y_ood given the edit
  prompt x_e under the edited model; the metric is the mean of the indicator. `temporal_ood_pairs`
  builds (x_e, y_ood) from `wise_temporal` records: y_ood is the record's `ood_rephrase`, minus
  the edit prompt when it starts with it (91 of the 150 official rows do), so the prompt is not
  scored twice. The reference CODE computes something else (B15: a per-token rate over the prompt
  text alone); we implement the paper. delta is a protocol parameter: the paper's value is not in
  the spec; the default `OOD_DELTA` = -log 0.8 is the per-token threshold of the reference code,
  applied to the mean token NLL. Record the delta with the result.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..models.modules import logits_at
from ..models.tokenization import IGNORE
from .teacher_forced import PromptEnds, teacher_forced_batches

OOD_DELTA = -math.log(0.8)
PPL_CLIP = 100.0


@dataclass
class PerplexityScores:
    nll: np.ndarray        # [n] mean token NLL of the target given the prompt (nats)
    n_tokens: np.ndarray   # [n] target tokens scored

    @property
    def ppl(self) -> np.ndarray:
        return np.exp(self.nll)

    def mean(self, clip: float | None = None) -> float:
        """Arithmetic mean of per-edit PPL; with clip, each PPL is capped first."""
        ppl = self.ppl if clip is None else np.minimum(self.ppl, clip)
        return float(ppl.mean()) if len(ppl) else float("nan")

    def summary(self, clip: float = PPL_CLIP) -> dict[str, float]:
        ppl = self.ppl
        return {
            "ppl_mean": self.mean(),
            f"ppl_mean_clip{clip:g}": self.mean(clip),
            "ppl_median": float(np.median(ppl)) if len(ppl) else float("nan"),
            "ppl_n_clipped": int((ppl > clip).sum()),
            "n": int(len(ppl)),
        }


@torch.no_grad()
def target_nll(model, tokenizer, pairs: Sequence[tuple[str, str]], *, batch_size: int = 16,
               device: torch.device | str | None = None, max_length: int | None = 1024,
               drop_lone_space: bool = False, prompt_ends: PromptEnds = None) -> PerplexityScores:
    """Mean token NLL of each answer given its prompt (teacher-forced, the repo's pair convention).
    Inputs longer than max_length are cut from the left, so the answer is always scored in full
    when it fits (WISE cuts at 1024 tokens). `prompt_ends`: as in `teacher_forced.score_pairs`."""
    nll = np.zeros(len(pairs))
    count = np.zeros(len(pairs), dtype=np.int64)
    for idx, batch in teacher_forced_batches(model, tokenizer, pairs, batch_size=batch_size, max_length=max_length,
                                             device=device, prompt_ends=prompt_ends, drop_lone_space=drop_lone_space):
        valid = batch.labels != IGNORE   # the LM head only where a target token is scored
        loss = F.cross_entropy(logits_at(model, batch.model_inputs(), valid).float(), batch.labels[valid],
                               reduction="none")
        sums = torch.zeros(len(idx), device=loss.device, dtype=loss.dtype).index_add_(
            0, valid.nonzero()[:, 0], loss).cpu().numpy()
        counts = valid.sum(-1).cpu().numpy()
        for row, i in enumerate(idx):
            count[i] = counts[row]
            nll[i] = sums[row] / max(1, counts[row])
    return PerplexityScores(nll, count)


def target_perplexity(model, tokenizer, pairs: Sequence[tuple[str, str]], **kwargs) -> PerplexityScores:
    """WISE Hallucination Rel: per-edit PPL of target_new given prompt; see PerplexityScores.summary()."""
    return target_nll(model, tokenizer, pairs, **kwargs)


@dataclass
class OODScores:
    loss: np.ndarray       # [n] mean token NLL of y_ood given x_e
    success: np.ndarray    # [n] 1.0 where loss < delta (Eq. 10's indicator)
    delta: float

    @property
    def rate(self) -> float:
        return float(self.success.mean()) if len(self.success) else float("nan")

    def summary(self) -> dict[str, float]:
        return {"ood_gen": self.rate, "ood_delta": self.delta,
                "ood_loss_mean": float(self.loss.mean()) if len(self.loss) else float("nan"),
                "n": int(len(self.loss))}


def temporal_ood_pairs(records: Iterable, *, strip_prompt: bool = True) -> list[tuple[str, str]]:
    """(x_e, y_ood) for each record with extras["ood_rephrase"] (the `wise_temporal` loader)."""
    pairs = []
    for r in records:
        ood = r.extras.get("ood_rephrase") if r.extras else None
        if not ood:
            continue
        y = ood
        if strip_prompt and ood.startswith(r.prompt) and ood[len(r.prompt):].strip():
            y = ood[len(r.prompt):].lstrip()
        pairs.append((r.prompt, y))
    return pairs


def temporal_ood(model, tokenizer, pairs: Sequence[tuple[str, str]], *, delta: float = OOD_DELTA,
                 **kwargs) -> OODScores:
    """WISE Eq. 10: mean over edits of [ L(y_ood | x_e) < delta ] under `model` (the edited model)."""
    scores = target_nll(model, tokenizer, pairs, **kwargs)
    return OODScores(scores.nll, (scores.nll < delta).astype(np.float64), float(delta))
