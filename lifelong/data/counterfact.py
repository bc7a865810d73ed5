"""CounterFact, in its two public layouts.

`counterfact` (flat EasyEdit layout, `counterfact-{edit,train}.json`): case_id, prompt, target_new,
ground_truth, rephrase_prompt, locality_prompt, locality_ground_truth, subject.

`counterfact_rome` (ROME/MEMIT layout: `counterfact.json`, `multi_counterfact.json`, and the
EasyEdit portability files such as `counterfact_portability_gpt4.json`):
    requested_rewrite = {prompt: template with "{}", subject, relation_id,
                         target_new: {str, id}, target_true: {str, id}}
    paraphrase_prompts [2], neighborhood_prompts [10], attribute_prompts, generation_prompts, ...
  edit: template with the subject -> target_new.str; ground_truth = target_true.str;
  rephrases: the paraphrases (`paraphrase: all|first|random`); locality: a neighbourhood prompt
  (`neighbour: first|random`, RLEdit draws one at random) -> target_true.str, since neighbourhood
  prompts share the relation and the true object of the edited fact. Random choices use a per-row
  RNG seeded with (seed, row index), so they do not depend on which rows were read before.
Named lists (data/named_lists.py): portability `one_hop` (EasyEdit's GPT-4 `portability` object) and
`subject_replace` (the template with `alternative_subject` -> target_new); locality lists `neighborhood`
(every neighbourhood prompt -> target_true), `attribute` (ROME's attribute prompts: other subjects that hold
target_new -> target_new) and `distracting` (`distracting_neighborhood_prompts`, the edit sentence before a
neighbour prompt -> target_true) where the row has them. `generation_prompts` (ROME's fluency) are kept, the
first `generation_prompts` of them when that option is > 0.
All the other fields go to `extras`.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Literal, Mapping

from ..core.records import EditRecord
from . import named_lists
from .rows import RowError, nested, opt_str, req_str, str_list
from .source import FileOptions, open_source

FLAT_OFFICIAL = ("EasyEdit's counterfact-edit.json / counterfact-train.json (zjunlp/EasyEdit data release, "
                 "see the EasyEdit README 'Datasets' section)")
ROME_OFFICIAL = ("ROME/MEMIT counterfact.json (21,919 rows) or multi_counterfact.json from "
                 "https://rome.baulab.info/data/dsets/ (MEMIT: memit.baulab.info); portability variants from "
                 "EasyEdit's data release")


@dataclass(kw_only=True)
class CounterFactOptions(FileOptions):
    path: str = "counterfact/counterfact-edit.json"


@dataclass(kw_only=True)
class CounterFactRomeOptions(FileOptions):
    path: str = "counterfact/counterfact.json"
    paraphrase: Literal["all", "first", "random"] = "all"
    neighbour: Literal["first", "random"] = "random"
    seed: int = 0
    generation_prompts: int = 0   # fluency prompts kept per record (0: all; ROME uses all)


def _uid(row: Mapping[str, Any], index: int) -> str:
    case_id = row.get("case_id")
    return str(case_id) if isinstance(case_id, (int, str)) and not isinstance(case_id, bool) else str(index)


def convert_flat(row: Mapping[str, Any], index: int, opts: CounterFactOptions) -> EditRecord:
    used = {"prompt", "target_new", "ground_truth", "rephrase_prompt", "locality_prompt",
            "locality_ground_truth", "subject"}
    return EditRecord(
        prompt=req_str(row, "prompt"),
        target=req_str(row, "target_new"),
        rephrases=(req_str(row, "rephrase_prompt"),),
        locality_prompt=req_str(row, "locality_prompt"),
        locality_answer=req_str(row, "locality_ground_truth"),
        subject=opt_str(row, "subject") or "",
        ground_truth=req_str(row, "ground_truth"),
        uid=_uid(row, index),
        extras={k: v for k, v in row.items() if k not in used},
    )


def convert_rome(row: Mapping[str, Any], index: int, opts: CounterFactRomeOptions) -> EditRecord:
    template = nested(row, "requested_rewrite.prompt")
    subject = nested(row, "requested_rewrite.subject")
    if template.count("{}") != 1:
        raise RowError("requested_rewrite.prompt", f"expected exactly one '{{}}' subject slot in {template!r}")
    target_new = nested(row, "requested_rewrite.target_new.str")
    target_true = nested(row, "requested_rewrite.target_true.str")
    paraphrases = str_list(row, "paraphrase_prompts")
    neighbours = str_list(row, "neighborhood_prompts")
    rng = random.Random(f"{opts.seed}:{index}")
    if opts.paraphrase == "all":
        rephrases = tuple(paraphrases)
    elif opts.paraphrase == "first":
        rephrases = (paraphrases[0],)
    else:
        rephrases = (rng.choice(paraphrases),)
    loc = neighbours[0] if opts.neighbour == "first" else rng.choice(neighbours)
    rewrite = row["requested_rewrite"]
    listed = ("attribute_prompts", "distracting_neighborhood_prompts", "portability")   # neighbours stay (grounding)
    extras = {k: v for k, v in row.items() if k not in ("requested_rewrite", "paraphrase_prompts", *listed)}
    extras.update(prompt_template=template, relation_id=rewrite.get("relation_id"),
                  target_new_id=rewrite["target_new"].get("id"), target_true_id=rewrite["target_true"].get("id"),
                  paraphrase_prompts=list(paraphrases))
    if "generation_prompts" in row:
        generation = str_list(row, "generation_prompts")
        extras["generation_prompts"] = generation[:opts.generation_prompts or None]
    locality = {"neighborhood": [(p, target_true) for p in neighbours]}
    for field, name, answer in (("attribute_prompts", "attribute", target_new),
                                ("distracting_neighborhood_prompts", "distracting", target_true)):
        if field in row:
            locality[name] = [(p, answer) for p in str_list(row, field)]
    portability, skipped = named_lists.one_hop(row)
    alias = opt_str(row, "alternative_subject")
    if alias:
        portability["subject_replace"] = [(template.replace("{}", alias), target_new)]
    extras.update({named_lists.LOCALITY_LISTS: locality, named_lists.PORTABILITY: portability,
                   named_lists.SKIPPED: skipped})
    return EditRecord(prompt=template.replace("{}", subject), target=target_new, rephrases=rephrases,
                      locality_prompt=loc, locality_answer=target_true, subject=subject,
                      ground_truth=target_true, uid=_uid(row, index), extras=extras)


def load(name: str, options: dict, *, data_dir, where: str):
    return open_source(name, CounterFactOptions, options, data_dir=data_dir, where=where,
                       convert=convert_flat, official=FLAT_OFFICIAL)


def load_rome(name: str, options: dict, *, data_dir, where: str):
    return open_source(name, CounterFactRomeOptions, options, data_dir=data_dir, where=where,
                       convert=convert_rome, official=ROME_OFFICIAL)
