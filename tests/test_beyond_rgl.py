"""Evaluation beyond Rel/Gen/Loc (issue 13): named lists (portability, harder locality), the KnowEdit loader,
ROME's fluency, held-out perplexity and retained knowledge; hand-checked cases that fail when the code is wrong."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from lifelong.core.errors import DataError
from lifelong.core.records import EditRecord
from lifelong.data.named_lists import first_alias, list_report, prompt_lists
from lifelong.eval import fluency, lists, registry, retention
from lifelong.pipeline.testbed import TinyModelConfig, build_model, train_tokenizer

from data_support import FIXTURES, SHARED_DATA, load, write_rows
from test_scoring import BigramLM, chain

pytestmark = pytest.mark.usefixtures("no_data_env", "cache")


@pytest.fixture(scope="module")
def tok(world):
    return train_tokenizer(world, None, vocab_size=2048, extra_names=50, add_bos=False)


@pytest.fixture(scope="module")
def random_model(tok):
    return build_model(TinyModelConfig("llama", d_model=32, n_layers=2, n_heads=2, d_ff=64), tok, seed=1).eval()


def _record(uid="0", portability=None, locality=None, generation=None) -> EditRecord:
    extras = {}
    if portability is not None:
        extras["portability"] = portability
    if locality is not None:
        extras["locality_lists"] = locality
    if generation is not None:
        extras["generation_prompts"] = generation
    return EditRecord(prompt="p", target="t", uid=uid, extras=extras)


# -- named lists: aggregation and aliases (spec baselines.md §6 tests 1-3) ---------------------------------

def test_lists_are_averaged_per_list_then_over_lists_and_records_without_lists_are_left_out():
    owners = [(0, "A"), (0, "A"), (0, "B"), (2, "B")]
    out = lists.aggregate("portability", np.array([1.0, 0.0, 1.0, 0.0]), owners, n=3)
    assert out["portability"][0] == 0.75            # mean(mean(1, 0), 1), not 2/3
    assert math.isnan(out["portability"][1])        # no lists: excluded, not 0
    assert out["portability"][2] == 0.0
    assert out["portability[A]"][0] == 0.5 and math.isnan(out["portability[A]"][2])
    assert registry.summarize("portability", out["portability"])["portability"] == 0.375


def test_first_alias_and_blank_answers_are_dropped_and_counted():
    assert first_alias([["Berlin", "Berlin, Germany"]]) == "Berlin"
    assert first_alias(["", " ", "Paris"]) == "Paris" and first_alias("  ") is None and first_alias(None) is None
    found, skipped = prompt_lists({"portability": {"R": [{"prompt": "q1", "ground_truth": [["Berlin", "B"]]},
                                                         {"prompt": "q2", "ground_truth": ""},
                                                         {"prompt": "q3"}]}}, "portability")
    assert found == {"R": [("q1", "Berlin")]} and skipped == 2


@pytest.mark.parametrize("row, key", [
    ({"locality": [{"prompt": "a", "ground_truth": "b"}]}, "'locality'"),
    ({"locality": {"Relation_Specificity": {"prompt": "a"}}}, "'locality.Relation_Specificity'"),
    ({"locality": {"Forgetfulness": ["a prompt"]}}, r"'locality.Forgetfulness\[0\]'"),
])
def test_a_named_list_of_the_wrong_shape_names_its_key(row, key):
    from lifelong.data.rows import RowError

    with pytest.raises(RowError, match=key):
        prompt_lists(row, "locality")


def test_an_unedited_model_agrees_with_itself_on_every_locality_list(tok, random_model):
    records = [_record("0", locality={"neighborhood": [("Morag Keir originates from", "Dundee"),
                                                       ("Ewan Tullis was born in", "Dundee")],
                                      "attribute": [("Isla Crombie plays for", "Cold Sea")]}),
               _record("1"),
               _record("2", locality={"distracting": [("A. Isla Crombie plays for", "Cold Sea")]})]
    kw = dict(max_length=None, batch_size=4)
    _, pre = lists.locality_lists(random_model, tok, records, reference=None, **kw)
    assert len(pre[0]) > 2 and len(pre[1]) == 0
    cols, _ = lists.locality_lists(random_model, tok, records, reference=pre, **kw)
    assert cols["locality_lists"][0] == 1.0 and cols["locality_lists"][2] == 1.0 and math.isnan(cols["locality_lists"][1])
    assert set(cols) == {"locality_lists", "locality_lists[neighborhood]", "locality_lists[attribute]",
                         "locality_lists[distracting]"}
    # a reference that differs at every position of the attribute list only: that list scores 0, the record 0.5
    n_neigh = len(pre[0]) - len(lists.score_pairs(random_model, tok, [("Isla Crombie plays for", "Cold Sea")])
                                .predictions[0])
    changed = [p.copy() for p in pre]
    changed[0][n_neigh:] = -1
    cols, _ = lists.locality_lists(random_model, tok, records, reference=changed, **kw)
    assert cols["locality_lists[attribute]"][0] == 0.0 and cols["locality_lists[neighborhood]"][0] == 1.0
    assert cols["locality_lists"][0] == 0.5


def test_portability_scores_the_lists_answer_teacher_forced_and_generated(tok):
    known, unknown = ("Ewan Tullis was born in", "Dundee"), ("Isla Crombie plays for", "Cold Sea")
    model = BigramLM(tok.vocab_size if hasattr(tok, "vocab_size") else len(tok), chain(tok, *known), fallback=0)
    records = [_record("0", portability={"one_hop": [known], "alias": [unknown]}), _record("1")]
    cols = lists.portability(model, tok, records, max_length=None, batch_size=8)
    assert cols["portability[one_hop]"][0] == 1.0 and cols["portability_em[one_hop]"][0] == 1.0
    assert cols["portability[alias]"][0] < 1.0 and cols["portability_em[alias]"][0] == 0.0
    assert cols["portability_em"][0] == 0.5 and math.isnan(cols["portability"][1])


# -- loaders ---------------------------------------------------------------------------------------

def test_knowedit_rows_map_to_records_with_every_named_list():
    src = load("knowedit", path="knowedit.json")
    zsre, wikibio, recent = list(src.records())
    assert (zsre.subject, zsre.prompt, zsre.target, zsre.ground_truth) == (
        "Harbour Lantern Society", "Where is the Harbour Lantern Society based?", "Berlin", "Norvik")
    assert zsre.rephrases == ("In which city is the Harbour Lantern Society based?",)
    assert (zsre.locality_prompt, zsre.locality_answer) == ("Who founded the Harbour Lantern Society?", "Ada Penhallow")
    assert zsre.extras["portability"] == {"Reasoning": [("Which country is the Harbour Lantern Society based in?",
                                                         "Germany")],
                                          "Subject_Aliasing": [("Where is the HLS based?", "Berlin")]}
    assert zsre.extras["list_entries_skipped"] == 1 and zsre.extras["missing_parts"] == []
    assert (wikibio.subject, wikibio.prompt, wikibio.target) == ("Morag Keir", "Morag Keir is a Scottish painter who",
                                                                 "was born in Dundee in 1931.")
    assert wikibio.rephrases == () and wikibio.extras["missing_parts"] == ["rephrase_prompt", "portability"]
    # no Relation_Specificity entries: the probe is the first entry of the first list
    assert recent.ground_truth is None
    assert (recent.locality_prompt, recent.locality_answer) == ("Isla Crombie plays the position of", "defender")
    report = list_report(src.records())
    assert report["records_with"] == {"portability": 2, "locality_lists": 3}
    assert report["entries"]["portability[Subject_Aliasing]"] == 1 and report["entries_skipped"] == 1
    assert report["missing_parts"] == {"portability": 1, "rephrase_prompt": 2}


def test_a_knowedit_row_with_bad_lists_is_reported_with_file_row_and_key(tmp_path):
    rows = json.loads((FIXTURES / "knowedit.json").read_text())
    rows[1]["portability"] = {"Reasoning": "not a list"}
    write_rows(tmp_path / "bad.json", rows)
    with pytest.raises(DataError, match=r"bad\.json.*row 1.*'portability\.Reasoning'.*expected a list"):
        list(load("knowedit", data_dir=tmp_path, path="bad.json").records())


def test_counterfact_rome_carries_portability_harder_locality_and_generation_prompts():
    record = next(load("counterfact_rome", path="counterfact_rome.json", generation_prompts=1).records())
    lists_ = record.extras["locality_lists"]
    assert lists_["neighborhood"][0] == ("Morag Keir originates from", "Dundee")            # -> the true object
    assert lists_["attribute"][0] == ("Morag Keir originates from", "Lisbon")               # -> the new object
    assert "distracting" not in lists_ and len(record.extras["generation_prompts"]) == 1
    assert list(record.extras["portability"]) == ["one_hop"]


def test_distracting_neighbourhood_prompts_become_their_own_locality_list(tmp_path):
    rows = json.loads((FIXTURES / "counterfact_rome.json").read_text())
    rows[0]["distracting_neighborhood_prompts"] = ["Piers Hallam originates from Lisbon. Morag Keir originates from"]
    write_rows(tmp_path / "cf.json", rows)
    record = next(load("counterfact_rome", data_dir=tmp_path, path="cf.json").records())
    assert record.extras["locality_lists"]["distracting"] == [
        ("Piers Hallam originates from Lisbon. Morag Keir originates from", "Dundee")]   # -> the true object


@pytest.mark.skipif(not (SHARED_DATA / "zsre").is_dir(), reason="../shared/data not present")
def test_the_real_portability_files_load_as_named_lists():
    inverse = next(load("zsre_mend", SHARED_DATA, path="zsre/portability/zsre_inverse_relation.json", target="alt",
                        loc_question_mark=False, require_locality=False).records())
    assert inverse.extras["portability"] == {"inverse_relation": [("Who is Marian Clairmont's sister?",
                                                                   "Claire Clairmont")]}
    assert inverse.locality_prompt == ""
    alias = next(load("counterfact_rome", SHARED_DATA, path="counterfact/portability/counterfact_subject_replace.json")
                 .records())
    assert alias.extras["portability"]["subject_replace"] == [("Mary Eliza Wright passed away in", "Birmingham")]


# -- fluency (spec §8 tests 1-2) -------------------------------------------------------------------

def test_ngram_entropy_on_hand_computed_texts():
    h2 = -(0.6 * math.log2(0.6) + 0.4 * math.log2(0.4))   # bigrams ab x3, ba x2
    assert fluency.ngram_entropy("a b a b a b") == pytest.approx((2 / 3 * h2 + 4 / 3 * 1.0) / 2, abs=1e-12)
    assert fluency.ngram_entropy("a b a b a b") == pytest.approx(0.9903, abs=1e-4)
    assert fluency.ngram_entropy("the the the the the the") == 0.0
    assert fluency.ngram_entropy("one two three four") > fluency.ngram_entropy("one two one two")


def test_fluency_sampling_is_seeded_per_record_and_leaves_the_run_rng_alone(tok, random_model):
    records = [_record("a", generation=["Isla Crombie plays for"]), _record("b")]
    torch.manual_seed(7)
    expected_next = torch.rand(3)
    torch.manual_seed(7)
    first = fluency.fluency(random_model, tok, records, max_length=None, batch_size=8)["fluency"]
    assert torch.equal(torch.rand(3), expected_next)
    second = fluency.fluency(random_model, tok, records[::-1], max_length=None, batch_size=8)["fluency"]
    assert first[0] == second[1] and math.isnan(first[1]) and first[0] > 0
    text = fluency.sample_texts(random_model, tok, ["Isla Crombie plays for"], seed=3)[0]
    assert text.startswith("Isla Crombie plays for") and len(tok(text)["input_ids"]) >= 60


# -- held-out perplexity and retained knowledge (spec §9 tests) --------------------------------------

TEXTS = ["Morag Keir originates from Dundee", "Isla Crombie plays for Cold Sea and scores often",
         "Ewan Tullis was born in Dundee"]


def _manual_ppl(model, tok, texts):
    nll, count = 0.0, 0
    for text in texts:
        ids = torch.tensor([tok(text)["input_ids"]])
        logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
        nll -= logp.gather(1, ids[0, 1:, None]).sum().item()
        count += ids.shape[1] - 1
    return math.exp(nll / count)


def test_heldout_perplexity_is_exact_and_independent_of_batching(tok, random_model):
    manual = _manual_ppl(random_model, tok, TEXTS)
    for batch_size in (1, 2, 8):
        assert retention.text_perplexity(random_model, tok, TEXTS, max_tokens=512,
                                         batch_size=batch_size) == pytest.approx(manual, rel=1e-5)
    cut = retention.text_perplexity(random_model, tok, TEXTS, max_tokens=3)
    assert cut == pytest.approx(_manual_ppl(random_model, tok, [tok.decode(tok(t)["input_ids"][:3]) for t in TEXTS])
                                , rel=1e-4)


def test_heldout_drift_is_zero_unedited_and_positive_when_the_head_is_halved(tok, random_model, tmp_path):
    import copy

    config = retention.HeldoutConfig(n_texts=3)
    held = retention.HeldoutSet(TEXTS, [])
    held.pre = retention.measure(held, random_model, tok, config, max_length=None, pre=None)
    same = retention.measure(held, random_model, tok, config, max_length=None, pre=held.pre)
    assert same["heldout_ppl_ratio"] == 1.0 and same["knowledge_retained"] is None
    halved = copy.deepcopy(random_model)
    with torch.no_grad():
        halved.lm_head.weight.mul_(0.5)
    assert retention.measure(held, halved, tok, config, max_length=None, pre=held.pre)["heldout_ppl_ratio"] != 1.0


def test_the_heldout_set_keeps_only_facts_the_unedited_model_knows(tok, tmp_path):
    facts = [{"prompt": "Ewan Tullis was born in", "target_new": "X", "ground_truth": "Dundee",
              "rephrase_prompt": "r", "locality_prompt": "l", "locality_ground_truth": "a", "subject": "s"},
             {"prompt": "Isla Crombie plays for", "target_new": "X", "ground_truth": "Cold Sea",
              "rephrase_prompt": "r", "locality_prompt": "l", "locality_ground_truth": "a", "subject": "s"}]
    write_rows(tmp_path / "facts.json", facts)
    model = BigramLM(len(tok), chain(tok, "Ewan Tullis was born in", "Dundee"), fallback=0)
    params = {"data_dir": str(tmp_path)}
    config = retention.HeldoutConfig(texts={"loader": "counterfact", "path": "facts.json"},
                                     facts={"loader": "counterfact", "path": "facts.json"}, n_facts=5)
    held = retention.build(config, params, model, tok, max_length=None)
    assert held.facts == [("Ewan Tullis was born in", "Dundee")] and held.fact_candidates == 2
    assert held.texts == ["Ewan Tullis was born in Dundee", "Isla Crombie plays for Cold Sea"]
    assert held.pre["knowledge_retained"] == 1.0
    later = retention.build(retention.HeldoutConfig(facts=config.facts, facts_start=1), params, model, tok, max_length=None)
    assert later.fact_candidates == 1 and later.facts == [] and later.pre["knowledge_retained"] is None
    absent = retention.build(retention.HeldoutConfig(texts={"loader": "counterfact", "path": "nope.json"}),
                             params, model, tok, max_length=None)
    assert absent.absent == ["texts"] and absent.texts == [] and absent.pre["heldout_ppl"] is None


# -- the runner: every new column, summary entry and definition -------------------------------------

def test_a_run_records_lists_fluency_and_heldout_metrics(params_file, tmp_path):
    import yaml

    from lifelong.pipeline.runner import RunSpec, run

    params = yaml.safe_load(params_file.read_text())
    params["data_dir"] = str(FIXTURES)
    params["datasets"]["cf"] = {"loader": "counterfact_rome", "path": "counterfact_rome.json", "generation_prompts": 1,
                                "metrics": ["portability", "locality_lists", "fluency"]}
    params["heldout"] = {"texts": {"loader": "counterfact", "path": "counterfact_flat.json"}, "n_texts": 3,
                         "facts": {"loader": "counterfact", "path": "counterfact_flat.json"}}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    summary = run(RunSpec(model="t-llama", dataset="cf", editor="ft", n_edits=1, n_blocks=2, out_dir=tmp_path / "out",
                          params_path=path, progress=False))
    per_edit = pd.read_csv(tmp_path / "out" / "per_edit.csv")
    for column in ("locality_lists", "locality_lists[neighborhood]", "locality_lists[attribute]", "fluency",
                   "pre_fluency", "heldout_ppl", "heldout_ppl_ratio", "pre_heldout_ppl"):
        assert per_edit[column].notna().all(), column
    for column in ("portability", "portability_em", "portability[one_hop]", "pre_portability"):   # row 1 has none
        assert per_edit[column].notna().tolist() == [True, False], column
    assert "pre_locality_lists" not in per_edit and "pre_heldout_ppl_ratio" not in per_edit
    for key in ("portability", "locality_lists", "locality_lists[attribute]", "fluency", "heldout_ppl",
                "heldout_ppl_ratio", "pre_heldout_ppl"):
        assert summary[key] is not None, key
    assert {"portability", "locality_lists", "fluency", "heldout_ppl", "heldout_ppl_ratio",
            "knowledge_retained"} <= set(summary["metric_definitions"])
    assert summary["heldout"]["texts"] == 3 and summary["heldout"]["absent"] == []
    assert summary["named_lists"]["records_with"] == {"locality_lists": 2, "portability": 1}
    # FT-M rewrote the model: the held-out text's perplexity moved
    assert summary["heldout_ppl_ratio"] != 1.0


# -- the report: the beyond table and the profile figure ------------------------------------------------

def _runs():
    rows = []
    for editor, port, ratio in (("ft", 0.5, 1.2), ("ultraedit", 0.25, 1.0)):
        for t in (1, 10):
            rows.append({"model": "m", "dataset": "d", "editor": editor, "n_edits": t, "missing": False,
                         "reliability": 1.0, "generalization": 0.5, "locality_agreement": 0.9,
                         "portability": port / t, "pre_portability": 0.125, "heldout_ppl_ratio": ratio,
                         "fluency": 5.0, "pre_fluency": 5.5})
    rows.append({**rows[-1], "editor": "grace", "n_edits": 10, "missing": True, "portability": None})
    return pd.DataFrame(rows)


def test_the_beyond_table_shows_each_metric_per_t_and_the_unedited_model():
    from lifelong.pipeline import tables

    table = tables.flat(tables.beyond_table(_runs(), "m", "d"))
    assert list(table.index) == ["ft", "ultraedit", "grace", "unedited"]
    assert table.loc["ft", "T=10 Port (teacher-forced)"] == 0.05
    assert table.loc["ultraedit", "T=1 Held-out PPL ratio"] == 1.0
    assert table.loc["grace", "T=10 Fluency (generated, bits)"] == "missing" and table.loc["grace", "T=1 Port (teacher-forced)"] == ""
    assert table.loc["unedited", "T=1 Port (teacher-forced)"] == 0.12 and table.loc["unedited", "T=1 Fluency (generated, bits)"] == 5.5
    assert "T=1 Port (generated)" not in table    # no run has it
    assert tables.beyond_table(_runs(), "m", "other") is None


def test_the_profile_figure_has_one_panel_per_metric(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from lifelong.pipeline import figures

    fig = figures.plot_profile(_runs(), "m", "d", tmp_path / "p.png")
    assert [ax.get_title() for ax in fig.axes] == ["Rel", "Gen", "Loc (agreement)", "Portability", "Fluency (bits)",
                                                   "Held-out PPL ratio"]
    assert (tmp_path / "p.png").stat().st_size > 10_000
