"""The edit record: one requested change of a model's knowledge, plus what we test it on."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping


@dataclass(frozen=True)
class EditRecord:
    """One edit.

    prompt -> target is the new fact (reliability). Each rephrase -> target tests generalization.
    locality_prompt -> locality_answer is unrelated knowledge the edit must not disturb.
    ground_truth is the answer the model held before the edit, when known.
    extras carries dataset-specific fields (portability, personas, ood prompts, ...).
    """

    prompt: str
    target: str
    rephrases: tuple[str, ...] = ()
    locality_prompt: str = ""
    locality_answer: str = ""
    subject: str = ""
    ground_truth: str | None = None
    uid: str = ""
    extras: Mapping[str, Any] = field(default_factory=dict)

    @property
    def rephrase(self) -> str | None:
        """The paraphrase used for the generalization metric (the first one)."""
        return self.rephrases[0] if self.rephrases else None
