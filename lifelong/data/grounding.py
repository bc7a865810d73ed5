"""Grounding corpora: pretraining sentences that teach a tiny model the TRUE facts of a real dataset.

Editing only means something on a model that knows the fact being changed. For real datasets
(ZsRE, CounterFact, ...) the tiny testbed models can be pretrained on a corpus built from the
records' own true facts, never their edit targets:

* the edit prompt and each rephrase -> `ground_truth` (ZsRE: answers[0]; CounterFact: the true
  object, target_true.str / ground_truth);
* CounterFact (ROME layout) neighbourhood prompts -> target_true.str (they share the relation and
  the true object), when the record carries extras["neighborhood_prompts"];
* the locality pair (locality_prompt -> locality_answer), which the model should know before and
  after editing.

A sentence is `prompt + " " + answer`, the repo's (prompt, answer) convention. Safety rule: a
(prompt, answer) pair is dropped when the answer equals (after `scoring.normalize_answer`) the edit
target of any edit record for that same prompt or one of its rephrases, so the corpus never teaches
an edit before it is made; records whose ground truth equals their own target (29 ZsRE rows, where
MEND's alt equals answers[0]) contribute no prompt sentence. `stats` counts every such decision.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable

from ..core.records import EditRecord
from ..eval.generation import normalize_answer


@dataclass
class GroundingCorpus:
    pairs: list[tuple[str, str]]                 # (prompt, true answer), deduplicated, in record order
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def sentences(self) -> list[str]:
        return [f"{p} {a}" for p, a in self.pairs]

    def answers_for(self, prompt: str) -> set[str]:
        index = self.__dict__.get("_index")
        if index is None or self.__dict__.get("_indexed") != len(self.pairs):
            index = defaultdict(set)
            for p, a in self.pairs:
                index[p].add(a)
            self.__dict__.update(_index=index, _indexed=len(self.pairs))
        return set(index.get(prompt, ()))


def grounding_corpus(records: Iterable[EditRecord], *, edits: Iterable[EditRecord] | None = None,
                     rephrases: bool = True, neighbours: bool = True, locality: bool = True) -> GroundingCorpus:
    """Build the corpus from `records`; `edits` (default: the same records) are the edit requests
    whose targets must never appear as an answer to their prompts."""
    records = list(records)
    edits = records if edits is None else list(edits)
    forbidden: dict[str, set[str]] = defaultdict(set)
    for e in edits:
        for prompt in (e.prompt, *e.rephrases):
            forbidden[prompt].add(normalize_answer(e.target))

    stats = {"records": len(records), "pairs": 0, "duplicates": 0, "dropped_edit_target": 0,
             "no_ground_truth": 0, "ground_truth_is_target": 0, "locality": 0, "neighbours": 0,
             "conflicting_prompts": 0}
    seen: set[tuple[str, str]] = set()
    answers_by_prompt: dict[str, set[str]] = defaultdict(set)
    pairs: list[tuple[str, str]] = []

    def add(prompt: str, answer: str, kind: str | None = None) -> None:
        if not prompt or not answer or not answer.strip():
            return
        if prompt in forbidden and normalize_answer(answer) in forbidden[prompt]:
            stats["dropped_edit_target"] += 1
            return
        if (prompt, answer) in seen:
            stats["duplicates"] += 1
            return
        seen.add((prompt, answer))
        answers_by_prompt[prompt].add(answer)
        pairs.append((prompt, answer))
        if kind:
            stats[kind] += 1

    for r in records:
        truth = r.ground_truth
        if not truth or not truth.strip():
            stats["no_ground_truth"] += 1
        elif normalize_answer(truth) == normalize_answer(r.target):
            stats["ground_truth_is_target"] += 1
        else:
            add(r.prompt, truth)
            if rephrases:
                for rephrase in r.rephrases:
                    add(rephrase, truth)
            if neighbours:
                for prompt in (r.extras or {}).get("neighborhood_prompts") or ():
                    if isinstance(prompt, str):
                        add(prompt, truth, "neighbours")
        if locality and r.locality_prompt:
            add(r.locality_prompt, r.locality_answer, "locality")

    stats["pairs"] = len(pairs)
    stats["conflicting_prompts"] = sum(1 for answers in answers_by_prompt.values() if len(answers) > 1)
    return GroundingCorpus(pairs, stats)


def grounding_sentences(records: Iterable[EditRecord], **kwargs) -> list[str]:
    return grounding_corpus(records, **kwargs).sentences


# -- the grounded part of the testbed's pretraining corpus ------------------------------------------

@dataclass(frozen=True)
class GroundingConfig:
    """params.yaml `grounding`: which real datasets the tiny models are taught the true facts of."""

    datasets: tuple[str, ...] = ()
    records: int = 100        # the first N records of each dataset: the ones the grid edits
    repeat: int = 1           # copies of each grounding sentence per pretraining epoch

    def validate(self) -> None:
        if self.records < 1:
            raise ValueError(f"records must be >= 1, got {self.records}")
        if self.repeat < 1:
            raise ValueError(f"repeat must be >= 1, got {self.repeat}")


@dataclass
class GroundedSet:
    """One dataset's grounding: the corpus, or why it was skipped (its file is not in the data dir)."""

    dataset: str
    corpus: GroundingCorpus | None
    records: list[EditRecord] = field(default_factory=list)   # the records whose edits the grid makes
    missing: str | None = None

    def report(self) -> dict:
        if self.corpus is None:
            return {"dataset": self.dataset, "status": "missing", "reason": self.missing}
        return {"dataset": self.dataset, "status": "grounded", **self.corpus.stats}


def grounded_sets(params: dict) -> list[GroundedSet]:
    """Build the grounding corpus of every dataset in params.yaml `grounding.datasets`.

    A dataset whose file is absent from the data directory is skipped (reported as missing), so the
    testbed still builds on a machine without the real data; any other data problem is an error.
    """
    from ..core.config import fill
    from . import load_dataset
    from ..core.errors import MissingDataError

    cfg = fill(GroundingConfig, params.get("grounding"), "params.yaml grounding")
    sets = []
    for name in cfg.datasets:
        try:
            source = load_dataset(name, params)
        except MissingDataError as exc:
            sets.append(GroundedSet(name, None, missing=str(exc)))
            continue
        records = list(source.records(0, min(cfg.records, len(source))))
        sets.append(GroundedSet(name, grounding_corpus(records), records))
    return sets


def grounded_sentences(sets: list[GroundedSet], repeat: int = 1) -> list[str]:
    return [s for g in sets if g.corpus is not None for s in g.corpus.sentences] * repeat
