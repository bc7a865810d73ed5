"""Real-data loaders: one test per format (fixtures), bad input, and the real files under ../shared/data
(when present). The Arrow cache and random access: test_data_cache.py."""
from __future__ import annotations

from pathlib import Path

import pytest

from lifelong.core.errors import ConfigError, DataError
from lifelong.data import LOADERS, locality_pool
from lifelong.data.rows import RowError, nested, str_list
from lifelong.data.source import FileSource
from data_support import FIXTURES, SHARED_DATA, fixture_rows, load, write_rows

pytestmark = pytest.mark.usefixtures("no_data_env", "cache")


# -- fixtures: one test per format ---------------------------------------------------------------

def test_all_loaders_registered():
    for name in ("zsre_mend", "zsre_ultraedit", "counterfact", "counterfact_rome", "ultraeditbench",
                 "wikibigedit", "fever", "wise_hallucination", "wise_temporal", "knowedit", "concat"):
        assert name in LOADERS


def test_zsre_mend_target_and_question_mark_are_protocol_options():
    alt = load("zsre_mend", path="zsre_mend.json", target="alt", loc_question_mark=False)
    ans = load("zsre_mend", path="zsre_mend.json", target="answers", loc_question_mark=True)
    assert len(alt) == len(ans) == 5
    a, b = next(alt.records()), next(ans.records())
    assert (a.prompt, a.target, b.target) == ("When was Harbour Lantern Society founded?", "1934", "1908")
    assert a.ground_truth == b.ground_truth == "1908"
    assert a.rephrases == ("In which year was the Harbour Lantern Society established?",)
    assert a.locality_prompt == "nq question: who painted the ceiling of the glass museum in Norvik"
    assert b.locality_prompt == a.locality_prompt + "?"
    assert a.locality_answer == "Ada Penhallow" and a.subject == "Harbour Lantern Society"
    assert a.extras["pred"] == "1921" and a.extras["portability"]["one_hop"][0][1] == "Norvik"
    second = list(alt.records(1, 2))[0]
    assert second.extras["answers"] == ["Cold Sea", "the Cold Sea"] and second.ground_truth == "Cold Sea"
    # row 3: alt == answers[0]; row 4: alt has a leading space (both occur in the real files)
    assert alt.report["target_equals_ground_truth"] == 1
    assert alt.report["target_has_outer_whitespace"] == 1
    assert ans.report["target_equals_ground_truth"] == 5


def test_zsre_mend_requires_explicit_protocol_and_refuses_unknown_keys():
    with pytest.raises(ConfigError, match="target"):
        load("zsre_mend", path="zsre_mend.json", loc_question_mark=False)
    with pytest.raises(ConfigError, match="loc_question_mark"):
        load("zsre_mend", path="zsre_mend.json", target="alt")
    with pytest.raises(ConfigError, match="unknown key"):
        load("zsre_mend", path="zsre_mend.json", target="alt", loc_question_mark=False, tagret="alt")
    with pytest.raises(ConfigError, match="expected one of"):
        load("zsre_mend", path="zsre_mend.json", target="pred", loc_question_mark=False)


def test_zsre_ultraedit_layout():
    src = load("zsre_ultraedit", path="zsre_ultraedit.json", loc_question_mark=True)
    records = list(src.records())
    assert len(records) == 4
    r = records[2]
    assert (r.prompt, r.target, r.rephrases) == ("Which sport is the Ketterby Cup awarded in?", "curling",
                                                 ("The Ketterby Cup is a trophy of which sport?",))
    assert r.locality_prompt == "nq question: when was the treaty of Oldmere signed?" and r.locality_answer == "1742"
    assert r.ground_truth is None and r.subject == "Ketterby Cup"


def test_counterfact_flat_layout():
    src = load("counterfact", path="counterfact_flat.json")
    r = next(src.records())
    assert (r.prompt, r.target, r.ground_truth) == ("The official language of Tarvania is", "Portuguese", "Danish")
    assert r.rephrases == ("In Tarvania, the language used by the government is",)
    assert (r.locality_prompt, r.locality_answer) == ("The official language of Belmark is", "Danish")
    assert r.uid == "11" and len(src) == 4


def test_counterfact_rome_layout_and_seeded_choices():
    src = load("counterfact_rome", path="counterfact_rome.json")
    r = next(src.records())
    assert r.prompt == "Piers Hallam originates from" and r.subject == "Piers Hallam"
    assert (r.target, r.ground_truth, r.locality_answer) == ("Lisbon", "Dundee", "Dundee")
    assert r.rephrases == ("A bell rang twice. Piers Hallam is native to", "The weather was mild. Piers Hallam was born in")
    assert r.locality_prompt in r.extras["neighborhood_prompts"]
    assert r.extras["relation_id"] == "P19" and r.extras["target_new_id"] == "Q597"
    assert r.extras["portability"]["one_hop"][0][1] == "Tagus" and r.uid == "101"
    assert list(src.records(2, 3))[0].extras["alternative_subject"] == "Zephyr Loom Three"

    first = load("counterfact_rome", path="counterfact_rome.json", paraphrase="first", neighbour="first")
    assert [x.locality_prompt for x in first.records()] == [row["neighborhood_prompts"][0]
                                                            for row in fixture_rows("counterfact_rome.json")]
    picks = {seed: [(x.rephrases, x.locality_prompt) for x in
                    load("counterfact_rome", path="counterfact_rome.json", paraphrase="random", seed=seed).records()]
             for seed in range(6)}
    again = [(x.rephrases, x.locality_prompt) for x in
             load("counterfact_rome", path="counterfact_rome.json", paraphrase="random", seed=3).records()]
    assert again == picks[3]                      # seeded: reproducible
    assert len({tuple(v) for v in picks.values()}) > 1  # and the seed matters


def test_counterfact_rome_template_without_slot_is_a_row_error(tmp_path):
    rows = fixture_rows("counterfact_rome.json")
    rows[1]["requested_rewrite"]["prompt"] = "The mother tongue is"
    write_rows(tmp_path / "cf.json", rows)
    with pytest.raises(DataError, match=r"row 1: field 'requested_rewrite.prompt'"):
        load("counterfact_rome", tmp_path, path="cf.json")
    rows[1]["requested_rewrite"]["prompt"] = "The mother tongue of {} is"
    rows[1]["requested_rewrite"]["target_new"] = {"id": "Q1"}
    write_rows(tmp_path / "cf.json", rows)
    with pytest.raises(DataError, match=r"row 1: field 'requested_rewrite.target_new.str': missing"):
        load("counterfact_rome", tmp_path, path="cf.json")


@pytest.mark.parametrize("path", ["ultraeditbench.json", "ultraeditbench.jsonl"])
def test_ultraeditbench_json_array_and_jsonl(path):
    src = load("ultraeditbench", path=path)
    assert isinstance(src, FileSource)
    records = list(src.records())
    assert len(src) == len(records) == 8
    r = records[3]
    assert (r.prompt, r.target) == ("What is the home port of the ferry Gull 3?", "Ruddock")
    assert r.rephrases == ("The ferry Gull 3 sails from which port?",)
    assert (r.locality_prompt, r.locality_answer) == ("nq question: who designed the lighthouse on isle 3", "Hana Wirth")
    assert [x.uid for x in src.records(5, 7)] == ["5", "6"]


def test_wikibigedit_nullable_probes_go_to_extras(tmp_path):
    src = load("wikibigedit", path="wikibigedit.json")
    records = list(src.records())
    assert len(records) == 4
    a, b = records[0], records[1]
    assert (a.prompt, a.target, a.locality_prompt) == ("Who is the director of Lake Ormsby Observatory?", "Celia Marten",
                                                       "Who is the mayor of Dunmore Bay?")  # no "?" appended
    assert a.extras["mhop_ans"] == "Kellerton" and a.extras["tag"] == "update" and a.extras["personas"].startswith("Hey")
    assert b.extras["personas"] is None and b.extras["mhop"] is None and b.extras["mhop_ans"] is None
    rows = fixture_rows("wikibigedit.json")
    rows[3]["mhop_ans"] = None
    write_rows(tmp_path / "w.json", rows)
    with pytest.raises(DataError, match=r"row 3: field 'mhop_ans'"):
        load("wikibigedit", tmp_path, path="w.json")


def test_fever_equiv_choice_is_seeded_per_row_and_label_checked(tmp_path):
    rows = fixture_rows("fever.json")
    src = load("fever", path="fever.json", seed=0)
    records = list(src.records())
    for row, r in zip(rows, records):
        assert r.rephrases[0] in row["equiv_prompt"] and r.extras["equiv_prompts"] == row["equiv_prompt"]
        assert r.target == row["alt"] and {r.target, r.ground_truth} == {"SUPPORTS", "REFUTES"}
        assert (r.locality_prompt, r.locality_answer) == (row["unrel_prompt"], row["unrel_ans"])
    # the choice for a row does not depend on the rows read before it
    assert list(src.records(3, 4))[0].rephrases == records[3].rephrases
    by_seed = {s: tuple(r.rephrases for r in load("fever", path="fever.json", seed=s).records()) for s in range(8)}
    assert len(set(by_seed.values())) > 1
    everything = list(load("fever", path="fever.json", equiv="all").records())
    assert everything[3].rephrases == tuple(rows[3]["equiv_prompt"])
    rows[2]["alt"] = "MAYBE"
    write_rows(tmp_path / "f.json", rows)
    with pytest.raises(DataError, match=r"row 2: field 'alt'.*MAYBE"):
        load("fever", tmp_path, path="f.json")


def test_wise_hallucination_and_temporal(tmp_path):
    hal = load("wise_hallucination", path="wise_hallucination.json")
    records = list(hal.records())
    assert len(records) == 3 and records[0].rephrases == () and records[0].target.startswith("His second book")
    # the empty locality answer (as in the real files): the edit stays, its locality probe is dropped
    assert records[1].locality_prompt == "" and records[1].extras["raw_locality"]["answer"] == ""
    assert hal.report["no_locality_probe"] == 1
    with pytest.raises(DataError, match=r"row 1: field 'locality_ground_truth'"):
        load("wise_hallucination", path="wise_hallucination.json", empty_locality="error")
    lenient = load("wise_hallucination", path="wise_hallucination.json", empty_locality="error", strict=False)
    assert len(lenient) == 2 and lenient.report["skipped"] == 1

    tem = load("wise_temporal", path="wise_temporal.json")
    t = next(tem.records())
    assert t.extras["ood_rephrase"].startswith("Sunvale Grid, the cooperative") and t.rephrases == ()
    rows = fixture_rows("wise_temporal.json")
    del rows[1]["ood_rephrase"]
    write_rows(tmp_path / "t.json", rows)
    with pytest.raises(DataError, match=r"row 1: field 'ood_rephrase': missing"):
        load("wise_temporal", tmp_path, path="t.json")


# -- bad input ------------------------------------------------------------------------------------

def test_missing_file_names_expected_path_and_official_source(tmp_path):
    with pytest.raises(DataError) as exc:
        load("ultraeditbench", tmp_path)
    message = str(exc.value)
    assert str(tmp_path / "ultraeditbench" / "UltraEditBench_2M.json") in message
    assert "XiaojieGu/UltraEditBench" in message
    with pytest.raises(DataError, match="memit.baulab.info"):
        load("zsre_mend", tmp_path, target="alt", loc_question_mark=False)


@pytest.mark.parametrize("field, value, problem", [
    ("alt", 7, "expected a string, got int"),
    ("alt", "", "empty string"),
    ("alt", "   ", "empty string"),
    ("answers", "1908", "expected a list of strings"),
    ("answers", [], "at least 1"),
    ("src", None, "expected a string, got NoneType"),
])
def test_malformed_row_strict_and_lenient(tmp_path, field, value, problem):
    rows = fixture_rows("zsre_mend.json")
    rows[2][field] = value
    write_rows(tmp_path / "z.json", rows)
    with pytest.raises(DataError) as exc:
        load("zsre_mend", tmp_path, path="z.json", target="alt", loc_question_mark=False)
    message = str(exc.value)
    assert str(tmp_path / "z.json") in message and "row 2" in message and f"field {field!r}" in message
    assert problem in message
    lenient = load("zsre_mend", tmp_path, path="z.json", target="alt", loc_question_mark=False, strict=False)
    assert len(lenient) == 4 and lenient.report["skipped"] == 1
    assert "row 2" in lenient.report["skipped_rows"][0]
    assert [r.uid for r in lenient.records()] == ["0", "1", "3", "4"]


def test_missing_field_and_non_object_row(tmp_path):
    rows = fixture_rows("counterfact_flat.json")
    del rows[1]["locality_ground_truth"]
    rows.append(["not", "an", "object"])
    write_rows(tmp_path / "c.json", rows)
    with pytest.raises(DataError, match=r"row 1: field 'locality_ground_truth': missing"):
        load("counterfact", tmp_path, path="c.json")
    lenient = load("counterfact", tmp_path, path="c.json", strict=False)
    assert lenient.report["skipped"] == 2 and len(lenient) == 3
    assert "row 4: field '<row>'" in lenient.report["skipped_rows"][1]


def test_malformed_json_names_the_row(tmp_path):
    text = (FIXTURES / "counterfact_flat.json").read_text()
    cut = text.index('"case_id": 13')
    (tmp_path / "c.json").write_text(text[:cut] + '"case_id": 13, "prompt": "Glimmer' )
    with pytest.raises(DataError, match=r"c\.json: row 2: malformed JSON"):
        load("counterfact", tmp_path, path="c.json")
    (tmp_path / "c.json").write_text("")
    with pytest.raises(DataError, match="empty"):
        load("counterfact", tmp_path, path="c.json")


def test_long_prompts_counted_or_skipped():
    keep = load("counterfact_rome", path="counterfact_rome.json", max_prompt_chars=45)
    # row 0: a paraphrase of 46 chars; row 1: "He left early. The first language of Anouk Verlinde is" (55)
    assert keep.report["long_prompts"] == 2 and keep.report["long_prompt_rows"] == [0, 1] and len(keep) == 3
    skip = load("counterfact_rome", path="counterfact_rome.json", max_prompt_chars=45, long_prompts="skip")
    assert len(skip) == 1 and [r.uid for r in skip.records()] == ["103"]
    assert load("counterfact_rome", path="counterfact_rome.json", max_prompt_chars=500).report["long_prompts"] == 0


def test_duplicates_reported_and_optionally_dropped(tmp_path):
    rows = fixture_rows("counterfact_flat.json")
    rows.append(dict(rows[1], case_id=99))
    rows.append(dict(rows[2], case_id=98, target_new="Kyoto"))  # same prompt, other target: not a duplicate
    write_rows(tmp_path / "c.json", rows)
    src = load("counterfact", tmp_path, path="c.json")
    assert src.report["duplicates"] == 1 and src.report["duplicate_rows"] == [(4, 1)] and len(src) == 6
    deduped = load("counterfact", tmp_path, path="c.json", dedupe=True)
    assert len(deduped) == 5 and "99" not in [r.uid for r in deduped.records()]


def test_more_edits_than_the_file_holds(tmp_path):
    with pytest.raises(DataError, match="n_edits=10 but .* holds only 4"):
        load("counterfact", path="counterfact_flat.json", n_edits=10)
    src = load("counterfact", path="counterfact_flat.json", n_edits=3)
    assert len(src) == 3
    with pytest.raises(DataError, match="asked for records 0..4 but the dataset has 3"):
        src.records(0, 4)
    cyc = load("counterfact", path="counterfact_flat.json", n_edits=10, cycle=True)
    uids = [r.uid for r in cyc.records()]
    assert len(cyc) == 10 and uids == ["11", "12", "13", "14", "11#1", "12#1", "13#1", "14#1", "11#2", "12#2"]
    assert [r.uid for r in cyc.records(3, 6)] == ["14", "11#1", "12#1"] and cyc.report["cycled"]
    stream = load("ultraeditbench", path="ultraeditbench.json", n_edits=11, cycle=True)
    assert [r.uid for r in stream.records(6, 11)] == ["6", "7", "0#1", "1#1", "2#1"]
    with pytest.raises(DataError, match="holds only 8"):
        load("ultraeditbench", path="ultraeditbench.json", n_edits=9)


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="n_edits"):
        load("counterfact", path="counterfact_flat.json", n_edits=0)
    with pytest.raises(ConfigError, match="strict"):
        load("counterfact", path="counterfact_flat.json", strict="yes")
    with pytest.raises(ConfigError, match="labels"):
        load("fever", path="fever.json", labels=["SUPPORTS"])
    with pytest.raises(ConfigError, match="unknown key"):  # every source is random-access now
        load("ultraeditbench", path="ultraeditbench.json", stream=True)


def test_locality_pool_from_another_entry():
    params = {"data_dir": str(FIXTURES), "datasets": {
        "edits": {"loader": "zsre_ultraedit", "path": "zsre_ultraedit.json", "loc_question_mark": True,
                  "locality_pool": "pool"},
        "pool": {"loader": "zsre_mend", "path": "zsre_mend.json", "target": "answers", "loc_question_mark": False},
    }}
    pool = locality_pool("edits", params)
    assert pool[0] == ("nq question: who painted the ceiling of the glass museum in Norvik", "Ada Penhallow")
    assert len(pool) == 5


def test_json_helpers():
    assert nested({"a": {"b": {"c": "x"}}}, "a.b.c") == "x"
    with pytest.raises(RowError, match=r"'a.b': expected an object"):
        nested({"a": {"b": 3}}, "a.b.c")
    with pytest.raises(RowError, match=r"'xs\[1\]'"):
        str_list({"xs": ["a", 2]}, "xs")


# -- the real files (../shared/data) ---------------------------------------------------------------

REAL = [
    # (loader, path, expected records, protocol options)
    ("zsre_mend", "zsre/zsre_mend_edit.json", 1037, {"target": "alt", "loc_question_mark": False}),
    ("zsre_mend", "zsre/zsre_mend_train-1k.json", 1000, {"target": "answers", "loc_question_mark": False}),
    ("counterfact", "counterfact/counterfact-edit.json", 10000, {}),
    ("counterfact", "counterfact/counterfact-train.json", 10000, {}),
    ("counterfact_rome", "counterfact/counterfact_portability_gpt4.json", 1031, {}),
    ("counterfact_rome", "counterfact/portability/counterfact_subject_replace.json", 213, {}),
    ("wise_hallucination", "wise_hallucination/hallucination-edit.json", 600, {}),
    ("wise_hallucination", "wise_hallucination/hallucination-train.json", 306, {}),
    ("wise_temporal", "wise_temporal/temporal-edit.json", 75, {}),
    ("wise_temporal", "wise_temporal/temporal-train.json", 75, {}),
]


def test_concat_joins_ranges_of_parts_in_order():
    flat = {"loader": "counterfact", "path": "counterfact_flat.json"}
    alone = list(load("counterfact", path="counterfact_flat.json").records())
    src = load("concat", parts=[dict(flat, start=1, stop=3), dict(flat, start=2),
                                {"loader": "zsre_mend", "path": "zsre_mend.json", "target": "alt",
                                 "loc_question_mark": False, "stop": 1}])
    assert len(src) == 2 + 2 + 1
    records = list(src.records())
    assert [r.prompt for r in records[:4]] == [r.prompt for r in alone[1:3] + alone[2:4]]
    assert records[4].prompt == "When was Harbour Lantern Society founded?"
    assert [r.uid for r in records[:3]] == [f"p0:{alone[1].uid}", f"p0:{alone[2].uid}", f"p1:{alone[2].uid}"]
    # random access across a part boundary equals the slice of a full read
    assert [r.uid for r in src.records(1, 5)] == [r.uid for r in records[1:5]]
    assert [p["records"] for p in src.report["parts"]] == [2, 2, 1]
    with pytest.raises(DataError, match="stream has 5"):
        list(src.records(3, 6))


@pytest.mark.parametrize("options, problem", [
    ({}, r"parts: expected a non-empty list"),
    ({"parts": []}, r"parts: expected a non-empty list"),
    ({"parts": [{"loader": "counterfact", "path": "counterfact_flat.json"}], "shuffle": True}, "unknown key"),
    ({"parts": [{"loader": "counterfact", "path": "counterfact_flat.json", "start": 3, "stop": 3}]},
     r"parts\[0\]: records 3..3 are not a non-empty range of the part's 4"),
    ({"parts": [{"loader": "counterfact", "path": "counterfact_flat.json", "stop": 9}]}, r"4 usable records"),
    ({"parts": [{"loader": "counterfact", "path": "counterfact_flat.json", "start": -1}]}, r"parts\[0\].start"),
    ({"parts": [{"loader": "counterfact", "path": "counterfact_flat.json", "tagret": 1}]}, r"parts\[0\]: unknown key"),
    ({"parts": [{"loader": "concat", "parts": []}]}, "cannot itself be a concat"),
])
def test_concat_bad_entries_name_the_part(options, problem):
    with pytest.raises(ConfigError, match=problem):
        load("concat", **options)


def test_the_stream_never_edits_the_heldout_records():
    """params.yaml's counterfact_stream skips the train records that `heldout` measures retention with."""
    import yaml

    params = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    held = params["heldout"]
    reserved = {held["texts"]["path"]: held["n_texts"], held["facts"]["path"]: held["facts_start"] + held["fact_candidates"]}
    parts = params["datasets"]["counterfact_stream"]["parts"]
    assert any(part["path"] in reserved for part in parts)
    for part in parts:
        assert part.get("start", 0) >= reserved.get(part["path"], 0), part


def _real(path: str) -> Path:
    full = SHARED_DATA / path
    if not full.is_file():
        pytest.skip(f"real data file {full} not present (see ../shared/data/README.md)")
    return full


@pytest.mark.parametrize("loader, path, count, options", REAL, ids=[p for _, p, _, _ in REAL])
def test_real_file_counts(loader, path, count, options):
    _real(path)
    src = load(loader, SHARED_DATA, path=path, **options)
    assert len(src) == count == src.report["rows_read"]
    assert src.report["skipped"] == 0
    records = list(src.records())
    assert len(records) == count and all(r.prompt and r.target for r in records)


def test_real_zsre_details():
    _real("zsre/zsre_mend_edit.json")
    src = load("zsre_mend", SHARED_DATA, path="zsre/zsre_mend_edit.json", target="alt", loc_question_mark=False)
    r = next(src.records())
    assert (r.prompt, r.target, r.ground_truth) == ("When was the inception of IAAF Combined Events Challenge?",
                                                    "2006", "1998")
    assert r.locality_prompt.startswith("nq question: ") and not r.locality_prompt.endswith("?")
    assert src.report["target_equals_ground_truth"] == 29 and src.report["target_has_outer_whitespace"] == 15
    # the train split has two empty `alt`s: the WISE pool entry must not target alt strictly
    _real("zsre/zsre_mend_train-1k.json")
    with pytest.raises(DataError, match=r"row 534: field 'alt': empty string"):
        load("zsre_mend", SHARED_DATA, path="zsre/zsre_mend_train-1k.json", target="alt", loc_question_mark=False)
    lenient = load("zsre_mend", SHARED_DATA, path="zsre/zsre_mend_train-1k.json", target="alt",
                   loc_question_mark=False, strict=False)
    assert len(lenient) == 998 and lenient.report["skipped"] == 2


def test_real_counterfact_and_wise_details():
    _real("counterfact/counterfact-edit.json")
    cf = load("counterfact", SHARED_DATA, path="counterfact/counterfact-edit.json")
    assert cf.report["duplicates"] == 4
    r = next(cf.records())
    assert (r.prompt, r.target, r.ground_truth, r.uid) == ("The mother tongue of Danielle Darrieux is", "English",
                                                           "French", "0")
    _real("counterfact/counterfact_portability_gpt4.json")
    rome = load("counterfact_rome", SHARED_DATA, path="counterfact/counterfact_portability_gpt4.json")
    r = next(rome.records())
    assert (r.prompt, r.target, r.ground_truth) == ("Spike Hughes originates from", "Philadelphia", "London")
    assert len(r.rephrases) == 2 and len(r.extras["neighborhood_prompts"]) == 10
    _real("wise_hallucination/hallucination-edit.json")
    hal = load("wise_hallucination", SHARED_DATA, path="wise_hallucination/hallucination-edit.json")
    assert hal.report["no_locality_probe"] == 7
    _real("wise_temporal/temporal-edit.json")
    tem = load("wise_temporal", SHARED_DATA, path="wise_temporal/temporal-edit.json")
    assert all(r.extras["ood_rephrase"] for r in tem.records())


def test_real_file_ranges_match_the_full_read(conversions):
    _real("counterfact/counterfact-train.json")
    first = load("counterfact", SHARED_DATA, path="counterfact/counterfact-train.json")
    again = load("counterfact", SHARED_DATA, path="counterfact/counterfact-train.json")  # from the cache
    assert len(conversions) == 1
    assert len(again) == len(first) == 10000 and again.report["duplicates"] == first.report["duplicates"] == 3
    everything = list(first.records())
    assert list(again.records(9990, 10000)) == everything[9990:] == list(first.records(9990, 10000))
