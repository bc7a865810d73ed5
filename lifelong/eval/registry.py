"""The metric registry (lm-evaluation-harness style): every per-edit metric the suite reports, with its
definition, its direction and the function that computes it. The runner's summary, the report and
the CLI all read this table; nothing else lists metric names.

Core metrics are computed for every run (one teacher-forced pass, `evaluate.score_records`).
Optional metrics belong to an *option* that a dataset entry turns on (`metrics: [exact_match]` in
params.yaml); an option computes one or more per-edit columns at once.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import numpy as np

from ..core.errors import ConfigError
from ..core.records import EditRecord
from . import fluency, generation, lists, perplexity


RUN_LEVEL = "heldout"   # the option of the model-level metrics (eval/retention.py): measured per block, not per edit


@dataclass(frozen=True)
class Metric:
    name: str                                   # the per-edit column and the summary key
    definition: str                             # recorded in every summary.json
    direction: Literal["higher", "lower"]       # which way is better
    option: str | None = None                   # the dataset `metrics:` entry that turns it on (None: always)
    kind: Literal["teacher-forced", "generated", "perplexity"] = "teacher-forced"
    summaries: tuple[str, ...] = ("mean",)      # how the summary aggregates it (see `summarize`)


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("reliability", "teacher-forced token accuracy of prompt -> new target, mean over edits", "higher"),
    Metric("generalization", "teacher-forced token accuracy of the first rephrase -> new target, mean over edits",
           "higher"),
    Metric("locality", "teacher-forced token accuracy of locality prompt -> gold locality answer (UltraEdit LS)",
           "higher"),
    Metric("locality_agreement", "fraction of locality answer positions whose argmax equals the unedited model's "
           "(EasyEdit/WISE Loc)", "higher"),
    Metric("reliability_em", "greedy decoding of len(target tokens) tokens after the prompt equals the target after "
           "SQuAD normalisation (generation exact match, 'Mirage of Model Editing'); with models.NAME.chat_template, the "
           "target appears as whole words in the reply to the chat-templated prompt (summary: generation_prompts)",
           "higher", "exact_match",
           "generated"),
    Metric("generalization_em", "the same generation exact match, from the first rephrase", "higher", "exact_match",
           "generated"),
    Metric("target_ppl", "exp(mean token NLL) of the target given the prompt (WISE Hallucination Rel); the summary "
           "gives the unclipped mean, the mean with each edit clipped at 100 (spec B13) and the median", "lower",
           "perplexity", "perplexity", ("mean", "clip100", "median")),
    Metric("ood_success", "WISE Eq. 10: [mean token NLL of ood_rephrase given the edit prompt < delta], "
           "delta = -log 0.8", "higher", "temporal_ood", "perplexity"),
    Metric("ood_loss", "mean token NLL of ood_rephrase given the edit prompt", "lower", "temporal_ood", "perplexity"),
    Metric("portability", "teacher-forced token accuracy of each portability prompt (a question that follows from the "
           "edit: one hop, subject alias, inverse relation, KnowEdit's named lists) -> its answer; per edit the mean "
           "over its lists of each list's mean (KnowEdit), edits without lists left out; per list: portability[NAME]",
           "higher", "portability"),
    Metric("portability_em", "generation exact match of the same portability prompts (as reliability_em), aggregated "
           "the same way", "higher", "portability", "generated"),
    Metric("locality_lists", "fraction of answer positions of each extra locality prompt whose argmax equals the "
           "unedited model's (CounterFact neighbourhood, attribute and distracting-neighbourhood prompts, KnowEdit's "
           "locality lists); per edit the mean over its lists; per list: locality_lists[NAME]", "higher",
           "locality_lists"),
    Metric("fluency", "ROME's generation entropy in bits: mean(2/3 H2, 4/3 H3) of the 2- and 3-gram distributions of "
           "NLTK word tokens of a top-5 sample of 100 tokens (prompt included) after each generation prompt, mean over "
           "the edit's prompts (MEMIT/AlphaEdit print it x100)", "higher", "fluency", "generated"),
    Metric("heldout_ppl", "exp(sum NLL / sum tokens) over the fixed held-out texts (params heldout) after the block's "
           "edits; one value per block, repeated on its edits", "lower", RUN_LEVEL, "perplexity"),
    Metric("heldout_ppl_ratio", "heldout_ppl after the block's edits / before any edit (1 = unchanged)", "lower",
           RUN_LEVEL, "perplexity"),
    Metric("knowledge_retained", "teacher-forced token accuracy on facts the unedited model answers wholly right "
           "(params heldout.facts, never edited) after the block's edits; 1 before editing by construction", "higher",
           RUN_LEVEL),
)}
CORE = tuple(name for name, m in METRICS.items() if m.option is None)
HEADLINE = ("reliability", "generalization", "locality")   # the papers' Rel / Gen / Loc


def base_name(column: str) -> str:
    """`portability[one_hop]` -> `portability`: a per-list column is summarised as its metric."""
    return column.split("[", 1)[0]


def is_metric(column: str) -> bool:
    return base_name(column) in METRICS


# -- optional metrics: option name -> function(model, tokenizer, records, *, max_length, batch_size, prompt_ends,
#    chat_template) -- (prompt_ends: the optional callable told each batch's last prompt tokens, see
#    teacher_forced.score_pairs; chat_template: generation metrics prompt through the chat template, see generation.py;
#    teacher-forced and perplexity metrics always use raw prompts)

Compute = Callable[..., dict[str, np.ndarray]]


def _exact_match(model, tokenizer, records: Sequence[EditRecord], *, max_length, batch_size,
                 prompt_ends=None, chat_template: bool = False) -> dict[str, np.ndarray]:
    n = len(records)
    kw = dict(max_length=max_length, batch_size=batch_size, prompt_ends=prompt_ends, chat_template=chat_template)
    out = {"reliability_em": generation.generation_exact_match(
        model, tokenizer, [(r.prompt, r.target) for r in records], **kw).exact_match,
        "generalization_em": np.full(n, np.nan)}
    has_reph = [i for i, r in enumerate(records) if r.rephrase]
    if has_reph:
        out["generalization_em"][has_reph] = generation.generation_exact_match(
            model, tokenizer, [(records[i].rephrase, records[i].target) for i in has_reph], **kw).exact_match
    return out


def _perplexity(model, tokenizer, records: Sequence[EditRecord], *, max_length, batch_size,
                prompt_ends=None, chat_template: bool = False) -> dict[str, np.ndarray]:
    pairs = [(r.prompt, r.target) for r in records]
    return {"target_ppl": perplexity.target_perplexity(model, tokenizer, pairs, max_length=max_length,
                                                       prompt_ends=prompt_ends).ppl}


def _temporal_ood(model, tokenizer, records: Sequence[EditRecord], *, max_length, batch_size,
                  prompt_ends=None, chat_template: bool = False) -> dict[str, np.ndarray]:
    n = len(records)
    out = {"ood_success": np.full(n, np.nan), "ood_loss": np.full(n, np.nan)}
    has_ood = [i for i, r in enumerate(records) if (r.extras or {}).get("ood_rephrase")]
    if has_ood:
        ood = perplexity.temporal_ood(model, tokenizer, perplexity.temporal_ood_pairs([records[i] for i in has_ood]),
                                      max_length=max_length, prompt_ends=prompt_ends)
        out["ood_success"][has_ood], out["ood_loss"][has_ood] = ood.success, ood.loss
    return out


def _fluency(model, tokenizer, records: Sequence[EditRecord], *, max_length, batch_size,
             prompt_ends=None, chat_template: bool = False) -> dict[str, np.ndarray]:
    return fluency.fluency(model, tokenizer, records, max_length=max_length, batch_size=batch_size,
                           prompt_ends=prompt_ends)


# locality_lists is computed in evaluate.score_records (it needs the pre-edit predictions); heldout by the runner
OPTIONS: dict[str, Compute | None] = {"exact_match": _exact_match, "perplexity": _perplexity,
                                      "temporal_ood": _temporal_ood, "portability": lists.portability,
                                      "fluency": _fluency, "locality_lists": None}


def option_columns(option: str) -> tuple[str, ...]:
    return tuple(name for name, m in METRICS.items() if m.option == option)


def check_options(names, where: str) -> tuple[str, ...]:
    """Validate a dataset entry's `metrics:` list."""
    names = tuple(names or ())
    unknown = [n for n in names if n not in OPTIONS]
    if unknown:
        raise ConfigError(f"{where}: unknown metric(s) {unknown}; known: {', '.join(OPTIONS)}")
    return names


def definitions(columns) -> dict[str, str]:
    """The definitions of the registered metrics among `columns` (what a summary records)."""
    return {c: METRICS[c].definition for c in dict.fromkeys(map(base_name, columns)) if c in METRICS}


def summarize(name: str, values: np.ndarray, prefix: str = "") -> dict[str, float | None]:
    """A metric's summary entries: `name` (mean over edits, NaN ignored), plus `name_clip100` and
    `name_median` for metrics that ask for them. All None when no edit has a value."""
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    out: dict[str, float | None] = {}
    base = base_name(name)
    for kind in METRICS[base].summaries if base in METRICS else ("mean",):
        key = prefix + name + ("" if kind == "mean" else f"_{kind}")
        if not len(values):
            out[key] = None
        elif kind == "mean":
            out[key] = float(values.mean())
        elif kind == "clip100":
            out[key] = float(np.minimum(values, perplexity.PPL_CLIP).mean())
        elif kind == "median":
            out[key] = float(np.median(values))
    return out


def summary_columns() -> tuple[str, ...]:
    """Every summary key a metric can produce, post-edit then pre-edit (the report's optional columns)."""
    keys = []
    for prefix in ("", "pre_"):
        for name, m in METRICS.items():
            keys += [prefix + name + ("" if k == "mean" else f"_{k}") for k in m.summaries]
    return tuple(keys)
