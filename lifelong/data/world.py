"""A synthetic fact world: seeded subjects, relations and objects, rendered through templates.

Why: with no model hub, editing is only meaningful on a model that *knows* facts. The world gives
  * known facts, which the testbed models are pretrained on under every template;
  * counterfactual edits of known facts (prompt = template 0, rephrase = another known template);
  * locality probes drawn from other known facts that no edit touches;
  * an "irrelevant" pool (WISE's D_irr) from yet other known facts;
  * after the known edits, a stream of new facts large enough for 2M+ distinct edit records.

Everything is a pure function of (config, index): record i is generated on demand, so a 1M-edit
run never holds the dataset in memory.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import cached_property
from typing import Iterator

from ..core.records import EditRecord

SYLLABLES = (
    "ka lo ven rik sa mor tel dun pra vi zel ga hor bel min tas qua ros nel fi "
    "dra kor ul be sto mi rav en ti gor lan pe sen tho cal ri vor ma dil ne "
    "bru ha zin col fen dor ju"
).split()  # 48 syllables -> 48**4 = 5.3M two-word names

# relation -> (templates, objects). Template 0 is the edit prompt; the others are rephrasings.
RELATIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "birthplace": (
        ("{} was born in the city of", "The birthplace of {} is", "{} is a native of", "The home town of {} is"),
        ("Paris", "London", "Berlin", "Madrid", "Rome", "Vienna", "Prague", "Lisbon", "Oslo", "Dublin",
         "Cairo", "Lima", "Tokyo", "Seoul", "Delhi", "Nairobi", "Toronto", "Sydney", "Boston", "Warsaw",
         "Athens", "Helsinki", "Bogota", "Manila"),
    ),
    "language": (
        ("The native language of {} is", "{} grew up speaking", "The mother tongue of {} is", "At home {} speaks"),
        ("French", "English", "German", "Spanish", "Italian", "Dutch", "Polish", "Swedish", "Finnish",
         "Greek", "Turkish", "Arabic", "Hindi", "Korean", "Japanese", "Russian", "Portuguese", "Czech"),
    ),
    "occupation": (
        ("The profession of {} is", "{} works as a", "By trade, {} is a", "{} earns a living as a"),
        ("doctor", "lawyer", "teacher", "pilot", "chef", "farmer", "nurse", "architect", "engineer",
         "painter", "baker", "carpenter", "journalist", "dentist", "librarian", "sailor", "tailor",
         "plumber", "banker", "poet"),
    ),
    "instrument": (
        ("The instrument played by {} is the", "{} performs on the", "On stage, {} plays the",
         "The favourite instrument of {} is the"),
        ("piano", "violin", "cello", "guitar", "flute", "trumpet", "harp", "drums", "oboe", "clarinet",
         "saxophone", "organ", "banjo", "accordion", "viola", "tuba"),
    ),
    "sport": (
        ("The sport played by {} is", "{} competes in", "On weekends, {} plays", "The favourite sport of {} is"),
        ("tennis", "football", "cricket", "rugby", "hockey", "golf", "basketball", "baseball", "volleyball",
         "handball", "badminton", "squash", "polo", "curling"),
    ),
    "employer": (
        ("The employer of {} is", "{} works for", "{} is employed by", "Every day {} goes to work at"),
        ("Google", "Microsoft", "Apple", "Amazon", "Nokia", "Siemens", "Toyota", "Honda", "Intel",
         "Oracle", "Samsung", "Philips", "Boeing", "Airbus", "Nestle", "Shell", "Adobe", "Sony"),
    ),
    "color": (
        ("The favourite colour of {} is", "{} likes the colour", "The colour {} prefers is", "{} always wears"),
        ("red", "blue", "green", "yellow", "purple", "orange", "black", "white", "pink", "brown", "grey",
         "violet", "crimson", "teal"),
    ),
    "citizenship": (
        ("{} is a citizen of", "The country of citizenship of {} is", "{} holds a passport from",
         "The nationality of {} is that of"),
        ("France", "Germany", "Spain", "Italy", "Canada", "Brazil", "Japan", "India", "Kenya", "Chile",
         "Norway", "Ireland", "Egypt", "Peru", "Greece", "Poland", "Mexico", "Sweden"),
    ),
}
RELATION_NAMES = tuple(RELATIONS)
WISE_SEED_WORDS = ("I", "You", "Because", "Yes", "Q:")  # WISE's template seeds must be in vocabulary


@dataclass(frozen=True)
class WorldConfig:
    seed: int = 0
    edit_subjects: int = 150      # known subjects whose facts get counterfactual edits
    locality_subjects: int = 40   # known subjects used only as locality probes
    pool_subjects: int = 20       # known subjects used only as WISE's irrelevant-string pool
    relations: int = 8            # how many of RELATIONS are used
    templates: int = 4            # templates per relation (1 prompt + rephrasings)

    def validate(self) -> None:
        if not 1 <= self.relations <= len(RELATIONS):
            raise ValueError(f"relations must be in 1..{len(RELATIONS)}")
        if not 2 <= self.templates <= 4:
            raise ValueError("templates must be in 2..4 (one prompt plus at least one rephrase)")
        for name in ("edit_subjects", "locality_subjects", "pool_subjects"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")


@dataclass(frozen=True)
class Fact:
    subject: str
    relation: str
    obj: str

    def render(self, template: int) -> str:
        return RELATIONS[self.relation][0][template].format(self.subject)

    def sentence(self, template: int) -> str:
        return f"{self.render(template)} {self.obj}"


class World:
    def __init__(self, config: WorldConfig | None = None):
        self.config = config or WorldConfig()
        self.config.validate()
        self.relations = RELATION_NAMES[: self.config.relations]
        n_names = len(SYLLABLES) ** 4
        # An affine bijection on [0, n_names) turns subject indices into scattered, distinct names.
        self._mult = _coprime(n_names, 2_654_435_761 + self.config.seed)
        self._offset = (self.config.seed * 7_919 + 1_234_567) % n_names
        self._n_names = n_names

    # -- subjects and facts ------------------------------------------------------------------------
    def subject(self, index: int) -> str:
        code = (self._mult * index + self._offset) % self._n_names
        sy = []
        for _ in range(4):
            code, r = divmod(code, len(SYLLABLES))
            sy.append(SYLLABLES[r])
        return f"{(sy[0] + sy[1]).capitalize()} {(sy[2] + sy[3]).capitalize()}"

    def fact(self, subject_index: int, relation: str) -> Fact:
        objects = RELATIONS[relation][1]
        obj = objects[self._hash("true", subject_index, relation) % len(objects)]
        return Fact(self.subject(subject_index), relation, obj)

    @property
    def n_known_subjects(self) -> int:
        c = self.config
        return c.edit_subjects + c.locality_subjects + c.pool_subjects

    def known_facts(self) -> Iterator[Fact]:
        for s in range(self.n_known_subjects):
            for rel in self.relations:
                yield self.fact(s, rel)

    def pretraining_sentences(self) -> list[str]:
        """Every known fact under every template: what the testbed models learn."""
        return [f.sentence(t) for f in self.known_facts() for t in range(self.config.templates)]

    # -- edit records ----------------------------------------------------------------------------
    @cached_property
    def n_known_edits(self) -> int:
        return self.config.edit_subjects * len(self.relations)

    def __len__(self) -> int:
        """Distinct edit records available: known counterfactuals first, then new facts."""
        return (self._n_names - self.n_known_subjects) * len(self.relations) + self.n_known_edits

    def record(self, i: int) -> EditRecord:
        if not 0 <= i < len(self):
            raise IndexError(i)
        n_rel = len(self.relations)
        if i < self.n_known_edits:
            subject_index, known = i // n_rel, True
        else:
            subject_index, known = self.n_known_subjects + (i - self.n_known_edits) // n_rel, False
        # rotate relations per subject so that consecutive records mix relations
        relation = self.relations[(i + subject_index) % n_rel]
        fact = self.fact(subject_index, relation)
        objects = RELATIONS[relation][1]
        shift = 1 + self._hash("new", subject_index, relation) % (len(objects) - 1)
        target = objects[(objects.index(fact.obj) + shift) % len(objects)]  # never the true object
        rephrase_t = 1 + self._hash("reph", subject_index, relation) % (self.config.templates - 1)
        loc = self._locality_fact(i)
        return EditRecord(
            prompt=fact.render(0),
            target=target,
            rephrases=(fact.render(rephrase_t),),
            locality_prompt=loc.render(0),
            locality_answer=loc.obj,
            subject=fact.subject,
            ground_truth=fact.obj,
            uid=f"{subject_index}:{relation}",
            extras={"relation": relation, "known": known},
        )

    def records(self, start: int = 0, stop: int | None = None) -> Iterator[EditRecord]:
        stop = len(self) if stop is None else min(stop, len(self))
        for i in range(start, stop):
            yield self.record(i)

    def locality_pool(self) -> list[tuple[str, str]]:
        """Known facts reserved for WISE's irrelevant training strings (never evaluated)."""
        c = self.config
        first = c.edit_subjects + c.locality_subjects
        return [(f.render(0), f.obj) for s in range(first, first + c.pool_subjects)
                for f in (self.fact(s, rel) for rel in self.relations)]

    def _locality_fact(self, i: int) -> Fact:
        c = self.config
        n = c.locality_subjects * len(self.relations)
        j = self._hash("loc", i, "") % n
        return self.fact(c.edit_subjects + j // len(self.relations), self.relations[j % len(self.relations)])

    def _hash(self, salt: str, index: int, relation: str) -> int:
        digest = hashlib.blake2b(f"{self.config.seed}|{salt}|{index}|{relation}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "little")


def _coprime(n: int, start: int) -> int:
    m = start % n or 1
    while math.gcd(m, n) != 1:
        m += 1
    return m
