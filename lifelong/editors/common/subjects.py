"""Where the subject sits in a prompt: the token position MEMIT-style editors read keys at and write values to
(ROME/MEMIT `fact_token: subject_last`).

The position is found from the tokenizer's character offsets, so it is right for any fast tokenizer (BPE with
or without a leading-space marker, SentencePiece, a prepended BOS). A record whose subject is empty or does not
occur in its prompt falls back to the last prompt token; callers count the fallbacks and report them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ...core.errors import LifelongError
from ...core.records import EditRecord


@dataclass(frozen=True)
class SubjectPositions:
    positions: list[int]      # per prompt, the index of the subject's last token in tokenizer(prompt)["input_ids"]
    fallbacks: int            # prompts whose subject was missing or absent: their last token was used

    def report(self) -> dict[str, int]:
        return {"subject_fallbacks": self.fallbacks, "prompts": len(self.positions)}


def subject_last_token(tokenizer, prompt: str, subject: str, start: int = 0) -> tuple[int, bool]:
    """(index of the subject's last token in the tokenized prompt, whether the subject was found).

    The first occurrence of `subject` in `prompt` at or after character `start` counts (a context template's
    generated prefix is skipped by starting at the prompt part). Without one, the last prompt token is returned."""
    if not getattr(tokenizer, "is_fast", False):
        raise LifelongError("subject positions need a fast tokenizer (character offsets)")
    enc = tokenizer(prompt, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    if not offsets:
        raise LifelongError(f"prompt {prompt!r} tokenizes to nothing")
    begin = prompt.find(subject, start) if subject else -1
    if begin < 0:
        return len(offsets) - 1, False
    end = begin + len(subject)
    covering = [i for i, (a, b) in enumerate(offsets) if b > a and a < end]   # real tokens starting before the end
    return (covering[-1], True) if covering else (len(offsets) - 1, False)


def subject_positions(tokenizer, records: Sequence[EditRecord], prompts: Sequence[str] | None = None) -> SubjectPositions:
    """The subject's last token in each record's prompt (or in `prompts[i]`, e.g. a template-formatted one)."""
    positions, fallbacks = [], 0
    for i, record in enumerate(records):
        pos, found = subject_last_token(tokenizer, record.prompt if prompts is None else prompts[i], record.subject)
        positions.append(pos)
        fallbacks += int(not found)
    return SubjectPositions(positions, fallbacks)
