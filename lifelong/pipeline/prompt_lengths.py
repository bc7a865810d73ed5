"""How a run treats prompts longer than the model's context (PROMPT_POLICY), and what it counted: the summary's
`prompt_lengths`."""
from __future__ import annotations

from typing import Any

from ..core.errors import LifelongError
from ..eval.evaluate import chunked

PROMPT_POLICY = ("an edit (prompt + target) longer than the model's context is refused before any edit; an "
                 "evaluation input (rephrase or locality prompt + answer) longer than it is cut from the left, "
                 "keeping the answer; prompts over the dataset's max_prompt_chars are counted and kept, or "
                 "skipped with long_prompts: skip")


def check_context(records, tokenizer, max_length: int, *, dataset: str, model: str,
                  chunk: int = 4096) -> dict[str, int]:
    """Editors train on prompt + target in full, so an edit longer than the model's context is refused
    up front, naming the records. Evaluation instead cuts long inputs from the left, keeping the answer:
    returns how many of the inputs evaluation scores (the first rephrase, the locality probe) it cuts
    (PROMPT_POLICY; the summary's `prompt_lengths`)."""
    too_long, offset, cut = [], 0, 0
    for block in chunked(records, chunk):
        prompts = tokenizer([r.prompt for r in block])["input_ids"]
        answers = tokenizer([" " + r.target for r in block], add_special_tokens=False)["input_ids"]
        for i, (p, a) in enumerate(zip(prompts, answers)):
            if len(p) + len(a) - 1 > max_length:
                too_long.append((offset + i, block[i].uid, len(p) + len(a) - 1))
        offset += len(block)
        cut += over_context(tokenizer, [(r.rephrase, r.target) for r in block if r.rephrase], max_length)
        cut += over_context(tokenizer, [(r.locality_prompt, r.locality_answer) for r in block if r.locality_prompt],
                            max_length)
    if too_long:
        examples = ", ".join(f"record {i} (uid {u}): {n} tokens" for i, u, n in too_long[:3])
        raise LifelongError(
            f"dataset {dataset!r}: {len(too_long)} edit(s) have prompt + target longer than the context of "
            f"model {model!r} ({max_length} tokens), e.g. {examples}. Skip them with "
            f"datasets.{dataset}.max_prompt_chars and long_prompts: skip, or use a model with a longer context.")
    return {"context_tokens": max_length, "eval_inputs_cut": cut}


def over_context(tokenizer, pairs: list[tuple[str, str]], max_length: int) -> int:
    if not pairs:
        return 0
    prompts = tokenizer([p for p, _ in pairs])["input_ids"]
    answers = tokenizer([" " + a for _, a in pairs], add_special_tokens=False)["input_ids"]
    return sum(len(p) + len(a) - 1 > max_length for p, a in zip(prompts, answers))


def report(source, counted: dict[str, Any]) -> dict[str, Any]:
    """The summary's `prompt_lengths`: the policy and what it did in a run: evaluation inputs cut to the context
    (`counted`, from `check_context`), and the loader's count of prompts over `max_prompt_chars` (kept or skipped)."""
    loader = getattr(source, "report", None) or {}
    return {"policy": PROMPT_POLICY, "context_tokens": None, "eval_inputs_cut": 0, **counted,
            "max_prompt_chars": loader.get("max_prompt_chars"), "over_max_prompt_chars": loader.get("long_prompts", 0),
            "long_prompts": getattr(getattr(source, "opts", None), "long_prompts", "keep")}
