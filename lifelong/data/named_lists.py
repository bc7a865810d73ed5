"""Named lists of extra probes on an edit, as EasyEdit and KnowEdit keep them (spec baselines.md §6-§7).

* portability: questions whose answer follows from the edit (multi-hop, subject alias, inverse relation);
  scored as accuracy against the given answer.
* locality lists: prompts the edit must leave alone (ROME's neighbourhood and attribute prompts, the
  distracting neighbourhood, KnowEdit's Relation_Specificity and Forgetfulness); scored as agreement with
  the unedited model.

A loader normalises them into `extras[PORTABILITY]` and `extras[LOCALITY_LISTS]`, each
`{list name: [(prompt, answer), ...]}`. An entry without a usable prompt or answer is dropped and counted in
`extras[SKIPPED]`; optional parts a record lacks are named in `extras[MISSING]`. `list_report` sums both over
the records a run edits (the summary's `named_lists`).
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Iterable, Mapping

from .rows import RowError, _short

Pairs = list[tuple[str, str]]
PORTABILITY = "portability"
LOCALITY_LISTS = "locality_lists"
SKIPPED = "list_entries_skipped"
MISSING = "missing_parts"


def first_alias(answer: Any) -> str | None:
    """KnowEdit's rule: the first non-blank alias. `[["Berlin", "Berlin, Germany"]]` -> "Berlin"; blank -> None."""
    if isinstance(answer, str):
        return answer.strip() or None
    if isinstance(answer, list):
        for item in answer:
            alias = first_alias(item)
            if alias:
                return alias
    return None


def prompt_lists(row: Mapping[str, Any], field: str) -> tuple[dict[str, Pairs], int]:
    """A KnowEdit `locality` or `portability` field, `{name: [{prompt, ground_truth}, ...]}`, as named pair lists
    plus the number of entries dropped for a blank prompt or answer. Absent or null: no lists. Any other shape
    is a RowError naming the key."""
    value = row.get(field)
    if value is None:
        return {}, 0
    if not isinstance(value, Mapping):
        raise RowError(field, f"expected an object of named lists, got {type(value).__name__} {_short(value)}")
    lists: dict[str, Pairs] = {}
    skipped = 0
    for name, items in value.items():
        if not isinstance(items, list):
            raise RowError(f"{field}.{name}", f"expected a list of {{prompt, ground_truth}} objects, got "
                                              f"{type(items).__name__} {_short(items)}")
        pairs: Pairs = []
        for i, item in enumerate(items):
            if not isinstance(item, Mapping):
                raise RowError(f"{field}.{name}[{i}]", f"expected an object with prompt and ground_truth, got "
                                                       f"{type(item).__name__} {_short(item)}")
            prompt, answer = item.get("prompt"), first_alias(item.get("ground_truth"))
            if isinstance(prompt, list):   # some KnowEdit copies wrap a single prompt in a list
                prompt = prompt[0] if len(prompt) == 1 else None
            if prompt is not None and not isinstance(prompt, str):
                raise RowError(f"{field}.{name}[{i}].prompt", f"expected a string, got {type(prompt).__name__}")
            if not prompt or not prompt.strip() or not answer:
                skipped += 1
                continue
            pairs.append((prompt, answer))
        if pairs:
            lists[str(name)] = pairs
    return lists, skipped


def one_hop(row: Mapping[str, Any], field: str = "portability") -> tuple[dict[str, Pairs], int]:
    """EasyEdit's GPT-4 portability object `{"New Question", "New Answer"}` (ZsRE and CounterFact copies) as the
    list `one_hop`; a blank question or answer is counted, not kept."""
    value = row.get(field)
    if value is None:
        return {}, 0
    if not isinstance(value, Mapping):
        raise RowError(field, f"expected an object with 'New Question' and 'New Answer', got "
                              f"{type(value).__name__} {_short(value)}")
    question, answer = value.get("New Question"), value.get("New Answer")
    for key, text in (("New Question", question), ("New Answer", answer)):
        if text is not None and not isinstance(text, str):
            raise RowError(f"{field}.{key}", f"expected a string, got {type(text).__name__}")
    if not (question or "").strip() or not (answer or "").strip():
        return {}, 1
    return {"one_hop": [(question, answer.strip())]}, 0


def merged(*parts: tuple[dict[str, Pairs], int]) -> tuple[dict[str, Pairs], int]:
    """Several (lists, skipped) results as one."""
    lists: dict[str, Pairs] = {}
    for part, _ in parts:
        lists.update(part)
    return lists, sum(skipped for _, skipped in parts)


def list_report(records: Iterable) -> dict[str, Any]:
    """Over `records`: how many carry each kind of list, the entries per list name, the entries dropped, and the
    optional parts missing (the summary's `named_lists`)."""
    carrying, entries, missing = Counter(), Counter(), Counter()
    skipped = 0
    for record in records:
        extras = record.extras or {}
        for kind in (PORTABILITY, LOCALITY_LISTS):
            lists = extras.get(kind) or {}
            if lists:
                carrying[kind] += 1
            for name, pairs in lists.items():
                entries[f"{kind}[{name}]"] += len(pairs)
        skipped += int(extras.get(SKIPPED, 0))
        missing.update(extras.get(MISSING, ()))
    return {"records_with": dict(carrying), "entries": dict(sorted(entries.items())), "entries_skipped": skipped,
            "missing_parts": dict(sorted(missing.items()))}
