"""lifelong.grounding: pretraining sentences with the TRUE facts of real datasets, never the edits."""
from __future__ import annotations

from pathlib import Path

import pytest

from lifelong.data import load_dataset
from lifelong.data.grounding import grounding_corpus, grounding_sentences
from lifelong.core.records import EditRecord
from lifelong.eval.generation import normalize_answer

FIXTURES = Path(__file__).parent / "fixtures"
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def _no_env_data_dir(monkeypatch):
    monkeypatch.delenv("LIFELONG_DATA_DIR", raising=False)


def records(data_dir: Path, loader: str, **options) -> list[EditRecord]:
    params = {"data_dir": str(data_dir), "datasets": {"d": {"loader": loader, **options}}}
    return list(load_dataset("d", params).records())


def assert_no_edit_target_taught(corpus, edits):
    edit_prompts = {p for r in edits for p in (r.prompt, *r.rephrases)}
    answers: dict[str, set[str]] = {}
    for prompt, answer in corpus.pairs:
        if prompt in edit_prompts:
            answers.setdefault(prompt, set()).add(normalize_answer(answer))
    for r in edits:
        for prompt in (r.prompt, *r.rephrases):
            assert normalize_answer(r.target) not in answers.get(prompt, set()), (r.uid, prompt, r.target)


def test_zsre_fixture_grounds_true_answers_only():
    recs = records(FIXTURES, "zsre_mend", path="zsre_mend.json", target="alt", loc_question_mark=False)
    corpus = grounding_corpus(recs)
    first = recs[0]
    assert corpus.answers_for(first.prompt) == {"1908"} and corpus.answers_for(first.rephrases[0]) == {"1908"}
    assert corpus.answers_for(first.locality_prompt) == {"Ada Penhallow"}
    assert "When was Harbour Lantern Society founded? 1908" in corpus.sentences
    # row 3 edits toward its own true answer (alt == answers[0]): it must not be grounded
    assert corpus.answers_for(recs[3].prompt) == set() and corpus.stats["ground_truth_is_target"] == 1
    assert corpus.stats["locality"] == 5 and len(corpus.pairs) == 4 * 2 + 5
    assert_no_edit_target_taught(corpus, recs)


def test_counterfact_rome_fixture_grounds_neighbours_with_the_true_object():
    recs = records(FIXTURES, "counterfact_rome", path="counterfact_rome.json")
    corpus = grounding_corpus(recs)
    assert corpus.answers_for("Ewan Tullis is native to") == {"Dundee"}
    assert corpus.answers_for("Piers Hallam originates from") == {"Dundee"}
    assert corpus.stats["neighbours"] == 4 + 3 + 2
    # each record's locality prompt is one of its neighbours: already there, counted as a duplicate
    assert corpus.stats["locality"] == 0 and corpus.stats["duplicates"] == 3
    assert_no_edit_target_taught(corpus, recs)
    without = grounding_corpus(recs, neighbours=False, locality=False, rephrases=False)
    assert len(without.pairs) == 3


def test_edit_targets_of_other_records_are_never_taught():
    facts = [EditRecord(prompt="Odile Ferrand plays the", target="trumpet", ground_truth="harp",
                        locality_prompt="Bastian Kroll plays the", locality_answer="harp")]
    edits = [EditRecord(prompt="Bastian Kroll plays the", target="Harp."),  # would contradict a locality fact
             EditRecord(prompt="Odile Ferrand plays the", target="trumpet")]
    corpus = grounding_corpus(facts, edits=edits)
    assert corpus.pairs == [("Odile Ferrand plays the", "harp")]
    assert corpus.stats["dropped_edit_target"] == 1
    assert grounding_sentences(facts) == ["Odile Ferrand plays the harp", "Bastian Kroll plays the harp"]


def test_records_without_ground_truth_contribute_locality_only():
    recs = records(FIXTURES, "wise_hallucination", path="wise_hallucination.json")
    corpus = grounding_corpus(recs)
    assert corpus.stats["no_ground_truth"] == 3 and corpus.stats["locality"] == 2
    assert all(a != r.target for r in recs for _, a in corpus.pairs)


def test_real_datasets_never_teach_their_edit_targets():
    paths = ["zsre/zsre_mend_edit.json", "counterfact/counterfact-edit.json",
             "counterfact/counterfact_portability_gpt4.json"]
    for p in paths:
        if not (SHARED_DATA / p).is_file():
            pytest.skip(f"real data file {SHARED_DATA / p} not present (see ../shared/data/README.md)")
    zsre = records(SHARED_DATA, "zsre_mend", path=paths[0], target="alt", loc_question_mark=False)
    cf = records(SHARED_DATA, "counterfact", path=paths[1])
    rome = records(SHARED_DATA, "counterfact_rome", path=paths[2])
    everything = zsre + cf + rome
    corpus = grounding_corpus(everything)
    assert_no_edit_target_taught(corpus, everything)
    # and the corpus does teach the true facts: every ZsRE question whose truth differs from its target
    grounded = sum(1 for r in zsre if r.ground_truth in corpus.answers_for(r.prompt))
    assert grounded == len(zsre) - corpus.stats["ground_truth_is_target"] - _dropped(zsre, everything)
    assert corpus.stats["ground_truth_is_target"] >= 29
    assert corpus.stats["neighbours"] > 5000
    cf_first = cf[0]
    assert corpus.answers_for(cf_first.prompt) == {"French"}


def _dropped(zsre, everything):
    """ZsRE questions whose true answer is some edit's target for that same question."""
    targets: dict[str, set[str]] = {}
    for r in everything:
        for p in (r.prompt, *r.rephrases):
            targets.setdefault(p, set()).add(normalize_answer(r.target))
    return sum(1 for r in zsre if normalize_answer(r.ground_truth) != normalize_answer(r.target)
               and normalize_answer(r.ground_truth) in targets.get(r.prompt, set()))


# -- the testbed's actual pretraining corpus (params.yaml `grounding`) -----------------------------

def _repo_params(**changes):
    from lifelong.core.config import load_params

    return load_params() | changes


def test_pretraining_corpus_never_teaches_an_evaluated_edit_target():
    """The exact sentences the pipeline pretrains on: no record the grid edits has `prompt + " " + target`
    (for its prompt or a rephrase) among them, while its true answer is there."""
    from lifelong.pipeline.cell import n_blocks
    from lifelong.pipeline.testbed import pretraining_corpus

    params = _repo_params(data_dir=str(SHARED_DATA))
    for name in params["grounding"]["datasets"]:
        path = SHARED_DATA / params["datasets"][name]["path"]
        if not path.is_file():
            pytest.skip(f"real data file {path} not present (see ../shared/data/README.md)")
    sentences, grounded = pretraining_corpus(params)
    taught = set(sentences)
    grid = params["grid"]
    evaluated = max(n * n_blocks(n, grid["edits_per_point"]) for n in grid["n_edits"])  # records the grid edits
    assert evaluated <= params["grounding"]["records"]
    for g in grounded:
        assert g.corpus is not None, g.report()
        edits = list(load_dataset(g.dataset, params).records(0, evaluated))
        known = 0
        for r in edits:
            for prompt in (r.prompt, *r.rephrases):
                assert f"{prompt} {r.target}" not in taught, (g.dataset, r.uid, prompt, r.target)
                assert normalize_answer(r.target) not in {normalize_answer(a) for a in g.corpus.answers_for(prompt)}
            known += f"{r.prompt} {r.ground_truth}" in taught
        assert known >= 0.9 * len(edits), (g.dataset, known)


def test_pretraining_corpus_without_the_data_is_the_world_alone(tmp_path):
    from lifelong.pipeline.testbed import pretraining_corpus, world_from_params

    params = _repo_params(data_dir=str(tmp_path))
    sentences, grounded = pretraining_corpus(params)
    assert sentences == world_from_params(params).pretraining_sentences()
    assert [g.report()["status"] for g in grounded] == ["missing"] * len(params["grounding"]["datasets"])
    assert "dataset file not found" in grounded[0].report()["reason"]
