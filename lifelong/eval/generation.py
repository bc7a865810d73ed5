"""Generation metrics: greedy decoding and exact match (the "Mirage of Model Editing" critique of
teacher forcing).

* `generation_exact_match`: greedy decoding of exactly as many tokens as the target has (under the
  repo's (prompt, " " + answer) convention), decoded and compared after SQuAD-style normalisation
  (lowercase, punctuation, articles a/an/the and extra whitespace removed). Batched with left
  padding and explicit position ids, so a batch gives the same tokens as one prompt at a time.
* With `chat_template=True` (params.yaml `models.NAME.chat_template`, for instruct models; raw prompts are
  the default, as in the papers) each prompt is one user turn in the tokenizer's chat template with the
  assistant's generation prompt, and the model replies in sentences ("The architect of X is ..."), so the
  first len(target) tokens never match. The hit rule is then: the normalised target appears, as whole words,
  in the normalised reply of len(target) + `reply_tokens` tokens (cut at the end-of-sequence token).

All model passes run under no_grad in eval mode, in length-sorted batches, results in input order.
"""
from __future__ import annotations

import re
import string
import unicodedata
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..core.errors import LifelongError
from ..models.tokenization import answer_ids, pad, pad_id
from .teacher_forced import PromptEnds

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_ASCII_PUNCT = str.maketrans("", "", string.punctuation)


# -- exact match -----------------------------------------------------------------------------------

def normalize_answer(text: str) -> str:
    """SQuAD-style: lowercase; delete punctuation (ASCII string.punctuation as SQuAD does, plus any
    Unicode P* character): "U.S.A." -> "usa", "Sleater-Kinney" -> "sleaterkinney"; drop the articles
    a/an/the; collapse whitespace."""
    text = text.lower()
    if text.isascii():
        text = text.translate(_ASCII_PUNCT)
    else:
        text = "".join(ch for ch in text
                       if ch not in string.punctuation and not unicodedata.category(ch).startswith("P"))
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, target: str) -> bool:
    return normalize_answer(prediction) == normalize_answer(target)


@dataclass
class GenerationScores:
    exact_match: np.ndarray        # [n] 1.0 / 0.0 after normalisation
    token_match: np.ndarray        # [n] 1.0 if the generated ids equal the target ids exactly
    generations: list[str]         # decoded greedy continuations
    generated_ids: list[list[int]]

    @property
    def mean(self) -> float:
        return float(self.exact_match.mean()) if len(self.exact_match) else float("nan")


def _device(model, device):
    return device or next(model.parameters()).device


class _PromptPassDone:
    """A logits processor that tells `prompt_ends` None once the prompt pass is over: every later forward
    is a cached one-token step whose input holds no prompt token (the key lies in the cache)."""

    def __init__(self, prompt_ends):
        self.prompt_ends = prompt_ends

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.prompt_ends(None)
        return scores


def greedy_generate(model, tokenizer, prompts: Sequence[str], lengths: Sequence[int], *, batch_size: int = 64,
                    device: torch.device | str | None = None, max_length: int | None = None,
                    prompt_ends: PromptEnds = None) -> list[list[int]]:
    """Greedy continuation of each prompt, exactly lengths[i] new tokens (no early stop); see `generate_tokens`."""
    return generate_tokens(model, tokenizer, prompts, lengths, batch_size=batch_size, device=device,
                           max_length=max_length, prompt_ends=prompt_ends)


@torch.no_grad()
def generate_tokens(model, tokenizer, prompts: Sequence[str], lengths: Sequence[int], *, batch_size: int = 64,
                    device: torch.device | str | None = None, max_length: int | None = None,
                    prompt_ends: PromptEnds = None, top_k: int | None = None) -> list[list[int]]:
    """Exactly lengths[i] new tokens after each prompt (no early stop), by the library's own `model.generate`:
    greedy, or sampled from the `top_k` most likely tokens (the caller seeds torch's generator).

    Prompts are left-padded (generate derives each row's positions from the attention mask, so a row sees
    the positions it would see alone). With max_length, a prompt is cut from the left to leave room for its
    tokens. `prompt_ends` (see `teacher_forced.score_pairs`) is told the last column before the prompt pass
    and None before each cached one-token step.
    """
    from transformers import GenerationConfig, LogitsProcessorList

    if len(prompts) != len(lengths):
        raise LifelongError(f"generate_tokens: {len(prompts)} prompts but {len(lengths)} lengths")
    device = _device(model, device)
    encoded = []
    for prompt, n in zip(prompts, lengths):
        ids = tokenizer(prompt)["input_ids"]
        if not ids:
            raise LifelongError(f"prompt {prompt!r} tokenizes to nothing (and the tokenizer adds no BOS)")
        if max_length is not None:
            ids = ids[-max(1, max_length - n):]
        encoded.append(ids)
    out: list[list[int]] = [[] for _ in prompts]
    order = sorted(range(len(prompts)), key=lambda i: (len(encoded[i]), lengths[i]))
    pid = pad_id(tokenizer)
    processors = LogitsProcessorList([_PromptPassDone(prompt_ends)] if prompt_ends is not None else [])
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(order), batch_size):
            idx = [i for i in order[start:start + batch_size] if lengths[i] > 0]
            if not idx:
                continue
            steps = max(lengths[i] for i in idx)
            ids, mask = pad([encoded[i] for i in idx], pid, side="left")
            ids, mask = ids.to(device), mask.to(device)
            if prompt_ends is not None:
                prompt_ends(torch.full((len(idx),), ids.shape[1] - 1, dtype=torch.long, device=device))
            # exactly `steps` tokens: no end-of-sequence stop, none of the model's sampling defaults
            sampling = dict(do_sample=True, top_k=top_k, top_p=1.0, temperature=1.0) if top_k else dict(do_sample=False)
            config = GenerationConfig(**sampling, num_beams=1, max_new_tokens=steps, min_new_tokens=0,
                                      eos_token_id=[], pad_token_id=pid)
            tokens = model.generate(input_ids=ids, attention_mask=mask, generation_config=config,
                                    logits_processor=processors)
            tokens = tokens[:, ids.shape[1]:].cpu().tolist()
            for row, i in enumerate(idx):
                out[i] = tokens[row][: lengths[i]]
    finally:
        if prompt_ends is not None:
            prompt_ends(None)
        model.train(was_training)
    return out


def contains_answer(reply: str, target: str) -> bool:
    """Whether the normalised target appears as whole words in the normalised reply (the chat-template rule)."""
    wanted = normalize_answer(target)
    return bool(wanted) and f" {wanted} " in f" {normalize_answer(reply)} "


def chat_prompts(tokenizer, prompts: Sequence[str]) -> list[str]:
    """Each prompt as one user turn in the tokenizer's chat template, ending with the assistant's generation prompt."""
    if not getattr(tokenizer, "chat_template", None):
        raise LifelongError(f"chat_template is on, but the tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no "
                            "chat template (set models.NAME.chat_template: false for a base model)")
    return [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
            for p in prompts]


def generation_exact_match(model, tokenizer, pairs: Sequence[tuple[str, str]], *, batch_size: int = 64,
                           device: torch.device | str | None = None, max_length: int | None = None,
                           drop_lone_space: bool = False, prompt_ends: PromptEnds = None,
                           chat_template: bool = False, reply_tokens: int = 16) -> GenerationScores:
    """Greedy-decode len(target tokens) tokens after each prompt and compare to the target (raw prompts);
    with `chat_template`, reply len(target) + reply_tokens tokens to the templated prompt and look for the target."""
    targets = [answer_ids(tokenizer, a, drop_lone_space=drop_lone_space) for _, a in pairs]
    for (prompt, answer), t in zip(pairs, targets):
        if not t:
            raise LifelongError(f"answer {answer!r} (prompt {prompt!r}) tokenizes to nothing")
    prompts = chat_prompts(tokenizer, [p for p, _ in pairs]) if chat_template else [p for p, _ in pairs]
    extra = reply_tokens if chat_template else 0
    generated = greedy_generate(model, tokenizer, prompts, [len(t) + extra for t in targets],
                                batch_size=batch_size, device=device, max_length=max_length,
                                prompt_ends=prompt_ends)
    eos = tokenizer.eos_token_id
    texts = []
    for ids in generated:
        cut = ids.index(eos) if eos is not None and eos in ids else len(ids)
        texts.append(tokenizer.decode(ids[:cut], skip_special_tokens=True))
    hit = contains_answer if chat_template else exact_match
    em = np.array([float(hit(text, answer)) for text, (_, answer) in zip(texts, pairs)])
    tok = np.array([float(g[:len(t)] == t) for g, t in zip(generated, targets)])
    return GenerationScores(em, tok, texts, generated)
