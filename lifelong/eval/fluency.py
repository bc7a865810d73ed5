"""ROME's fluency: the n-gram entropy of text the model writes after CounterFact's `generation_prompts`
(spec baselines.md §8; MEMIT and AlphaEdit report it x100, GPT-2 XL about 622).

Generation follows ROME's `generate_fast`: top-k = 5 sampling, one sample per prompt, `MAX_OUT_LEN` = 100 tokens
counting the prompt; the text is the decoded whole sequence, NFKD-normalised, "\\n\\n" made a space. Sampling is
seeded per record (from the run's seed and the record's uid) inside a forked RNG, so a score does not depend
on batching or on what ran before, and the run's own random stream is untouched.

fluency(text) = mean(2/3 H2, 4/3 H3) = H2/3 + 2 H3/3, with Hn the entropy in bits of the text's n-gram
frequencies over NLTK word tokens; a record's score is the mean over its generations. Tokens: NLTK's Punkt
sentence splitter with its default parameters, then NLTK's word tokenizer (`nltk.word_tokenize` is the same
pair, but needs the pretrained Punkt data, which cannot be downloaded here).

ROME's consistency (TF-IDF against Wikipedia snippets of the new object) needs files the data directory does not
hold, so it is not computed: absent, never 0.
"""
from __future__ import annotations

import math
import unicodedata
import zlib
from collections import Counter
from typing import Sequence

import numpy as np
import torch

from ..core.records import EditRecord
from .generation import generate_tokens

MAX_OUT_LEN = 100
TOP_K = 5
WEIGHTS = {2: 2 / 3, 3: 4 / 3}


def word_tokens(text: str) -> list[str]:
    from nltk.tokenize import NLTKWordTokenizer
    from nltk.tokenize.punkt import PunktSentenceTokenizer

    words = NLTKWordTokenizer()
    return [w for sentence in PunktSentenceTokenizer().tokenize(text) for w in words.tokenize(sentence)]


def ngram_entropy(text: str) -> float:
    """ROME's `compute_n_gram_entropy`: mean over n of weight_n x entropy (bits) of the n-gram distribution."""
    tokens = word_tokens(text)
    weighted = []
    for n, weight in WEIGHTS.items():
        counts = Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))
        total = sum(counts.values())
        entropy = -sum(c / total * math.log2(c / total) for c in counts.values()) if total else 0.0
        weighted.append(weight * entropy)
    return float(np.mean(weighted))


def sample_texts(model, tokenizer, prompts: Sequence[str], *, seed: int, max_length: int | None = None,
                 prompt_ends=None) -> list[str]:
    """One top-k sample per prompt, MAX_OUT_LEN tokens in all (prompt included), decoded whole and cleaned."""
    encoded = [tokenizer(p)["input_ids"] for p in prompts]
    lengths = [max(1, MAX_OUT_LEN - len(ids)) for ids in encoded]
    device = next(model.parameters()).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        generated = generate_tokens(model, tokenizer, prompts, lengths, batch_size=len(prompts), max_length=max_length,
                                    prompt_ends=prompt_ends, top_k=TOP_K)
    texts = []
    for ids, new in zip(encoded, generated):
        text = unicodedata.normalize("NFKD", tokenizer.decode(ids + new, skip_special_tokens=True))
        texts.append(text.replace("\n\n", " ").replace("<|endoftext|>", ""))
    return texts


def fluency(model, tokenizer, records: Sequence[EditRecord], *, max_length, batch_size, prompt_ends=None,
            chat_template: bool = False, seed: int = 0) -> dict[str, np.ndarray]:
    """Per record, the mean fluency of its `generation_prompts` samples (NaN without them). Raw prompts always:
    ROME's fluency is a property of free text, not of an answer."""
    out = np.full(len(records), np.nan)
    for i, record in enumerate(records):
        prompts = [p for p in (record.extras or {}).get("generation_prompts") or () if isinstance(p, str) and p.strip()]
        if prompts:
            texts = sample_texts(model, tokenizer, prompts, seed=zlib.crc32(f"{seed}:{record.uid}".encode()),
                                 max_length=max_length, prompt_ends=prompt_ends)
            out[i] = float(np.mean([ngram_entropy(t) for t in texts]))
    return {"fluency": out}
