"""Fault injection: every bad input a user can hand `python -m lifelong run` gets one clear line on stderr, exit
code 2, and loses nothing already computed (a result file already in --out survives, byte for byte).

FAULTS is the list; docs/reliability.md holds the same list as a table with each fault's message, and a test
below checks that the two agree. A fault the suite does not yet handle well is listed with `gap=True`: its test
is a strict xfail that asserts the message it *should* give, so fixing it turns the test red until the entry is
updated (and the table with it).
"""
from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import yaml

from lifelong.core.paths import ROOT

RELIABILITY = ROOT / "docs" / "reliability.md"
ZSRE_ROW = {"subject": "Harbour Lantern Society", "src": "When was Harbour Lantern Society founded?", "pred": "1921",
            "rephrase": "In which year was the Harbour Lantern Society established?", "alt": "1934",
            "answers": ["1908"], "loc": "nq question: who painted the ceiling of the glass museum in Norvik",
            "loc_ans": "Ada Penhallow"}


@dataclass(frozen=True)
class Fault:
    name: str
    message: str                       # a substring of the one stderr line (regex when it starts with "re:")
    args: tuple[str, ...] = ()         # CLI arguments that replace or extend the base command
    params: Callable[[dict, Path], None] | None = None   # edits the params mapping (and may write files)
    gap: bool = False                  # not handled well yet: a strict xfail (docs/reliability.md says so)
    now: str = ""                      # for a gap: what happens today
    exit_code: int = 2                 # 2: bad input; 1: the machine failed (a write)
    extra: dict = field(default_factory=dict)


def _set(path: str, value):
    """A params edit: set a dotted key."""
    def edit(params: dict, _tmp: Path):
        *parents, last = path.split(".")
        node = params
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return edit


def _data(text: str | bytes, loader: str = "zsre_mend", name: str = "bad.json", **options):
    """A params edit: dataset `bad` whose file (in a temporary data directory) holds `text`."""
    def edit(params: dict, tmp: Path):
        folder = tmp / "data"
        folder.mkdir(exist_ok=True)
        (folder / name).write_bytes(text if isinstance(text, bytes) else text.encode())
        params["data_dir"] = str(folder)
        protocol = {"target": "alt", "loc_question_mark": False} if loader == "zsre_mend" else {}
        params["datasets"]["bad"] = {"loader": loader, "path": name, **protocol, **options}
    return edit


def _rows(*rows) -> str:
    return json.dumps(list(rows))


def _model(damage: Callable[[Path], None]):
    """A params edit: model `broken`, a copy of the fixture model `t-gpt2` that `damage` then breaks."""
    def edit(params: dict, tmp: Path):
        source = Path(params["models"]["t-gpt2"]["path"])
        copy = tmp / "broken-model"
        shutil.copytree(source, copy)
        damage(copy)
        params["models"]["broken"] = {"path": str(copy)}
    return edit


def _truncate(name: str, keep: int):
    def damage(folder: Path):
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(data[:keep])
    return damage


def _nan_weight(folder: Path):
    from safetensors.torch import load_file, save_file

    weights = load_file(folder / "model.safetensors")
    name = next(k for k in weights if k.endswith("mlp.c_proj.weight"))
    weights[name][0, 0] = float("nan")
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})


def _hidden_bad_value(params: dict, _tmp: Path):
    params["editors"]["ft"]["default"]["lr"] = "fast"
    params["editors"]["ft"]["gpt2"] = {"lr": 1.0e-3}     # the merged value is fine; the default layer is not


BAD_BYTE = len(json.dumps([ZSRE_ROW])) + 20    # inside the second row (row 1)

FAULTS = [
    # -- names and numbers on the command line
    Fault("unknown model", "unknown model 'nope'", ("--model", "nope")),
    Fault("unknown dataset", "unknown dataset 'nope'", ("--dataset", "nope")),
    Fault("unknown editor", "unknown editor 'nope'", ("--editor", "nope")),
    Fault("zero edits", "--n-edits and --blocks must be >= 1", ("--n-edits", "0")),
    Fault("zero blocks", "--n-edits and --blocks must be >= 1", ("--blocks", "0")),
    Fault("eval-at beyond the stream", "eval-at values must lie in 1..2", ("--eval-at", "5")),
    Fault("eval-at not a number", "re:argument --eval-at", ("--eval-at", "ten")),
    Fault("negative threads", "--threads: expected an integer >= 0", ("--threads", "-1")),
    Fault("negative evaluation sample", "--eval-sample must be an integer >= 0", ("--eval-sample", "-1")),
    # -- device and dtype (issue 15): refused before the model loads
    Fault("a device that is not cpu or cuda", "device 'gpu0': expected auto, cpu, cuda or cuda:K", ("--device", "gpu0")),
    Fault("a GPU this machine does not have", "re:device 'cuda:99' (was asked for, but torch .* sees no GPU|: this machine has)",
          ("--device", "cuda:99")),
    Fault("float16 on the CPU", "models.gpt2-half.dtype (float16) on cpu: float16 is not supported on the CPU",
          ("--model", "gpt2-half", "--device", "cpu"),
          params=lambda p, _t: p["models"].__setitem__("gpt2-half", {**p["models"]["t-gpt2"], "dtype": "float16"})),
    Fault("device_map other than auto", "params.yaml models.gpt2-mapped.device_map: expected null or auto, got 'balanced'",
          ("--model", "gpt2-mapped"),
          params=lambda p, _t: p["models"].__setitem__("gpt2-mapped", {**p["models"]["t-gpt2"], "device_map": "balanced"})),
    Fault("override of the wrong type", "--set n_iter: expected an integer, got 'abc'", ("--set", "n_iter=abc")),
    Fault("override of an unknown key", "--set: unknown key(s) ['learning_rate']; valid keys: ['layer', 'lr',", ("--set", "learning_rate=0.1")),
    Fault("override without =", "expected key=value", ("--set", "lr")),
    Fault("override of a layer that does not exist", "layer 40 does not exist", ("--set", "layer=40")),
    Fault("more edits than the dataset holds", "dataset 'bad' holds 2 edits; the run needs 5 x 1 block(s) = 5", ("--dataset", "bad", "--n-edits", "5"),
          params=_data(_rows(ZSRE_ROW, ZSRE_ROW))),
    # -- params.yaml
    Fault("params file missing", "/nonexistent/params.yaml: params file not found", ("--params", "/nonexistent/params.yaml")),
    Fault("params file not YAML", "re:params.yaml: not valid YAML \\(line 2, column 1: ", extra={"raw_params": "models: [unclosed\n"}),
    Fault("params file a list", "params.yaml: expected a mapping at the top level", extra={"raw_params": "- a\n- b\n"}),
    Fault("unknown key in an editor section", "params.yaml editors.ft.default: unknown key(s) ['learning_rate']; valid keys: ['layer', 'lr',", params=_set("editors.ft.default.learning_rate", 0.1)),
    Fault("wrong type in an editor section", "params.yaml editors.ft.default.n_iter: expected an integer, got 'many'", params=_set("editors.ft.default.n_iter", "many")),
    Fault("model with neither path nor hub", "params.yaml models.empty: needs `path` (a local model) or `hub` (a hub id)", ("--model", "empty"), params=_set("models.empty", {})),
    Fault("model path that does not exist", "model 'gone' is not built yet: /nonexistent/model has no config.json. Build it with `dvc repro pretrain@gone`", ("--model", "gone"),
          params=_set("models.gone", {"path": "/nonexistent/model"})),
    Fault("unknown loader", "params.yaml datasets.odd.loader: 'csvish' is not a known loader; known loaders: concat, counterfact,", ("--dataset", "odd"), params=_set("datasets.odd", {"loader": "csvish"})),
    Fault("unknown dataset option", "params.yaml datasets.bad: unknown key(s) ['colour']; valid keys: [", ("--dataset", "bad"),
          params=_data(_rows(ZSRE_ROW, ZSRE_ROW), colour="red")),
    Fault("runtime.threads not a number", "params.yaml runtime.threads: expected an integer >= 0 (0: torch's default, one per core), got 'many'", params=_set("runtime.threads", "many")),
    Fault("runtime.deterministic not true/false", "params.yaml runtime.deterministic: expected true or false, got 'yes please'",
          params=_set("runtime.deterministic", "yes please")),
    Fault("dataset file absent", "params.yaml datasets.bad.path: dataset file not found: ", ("--dataset", "bad"),
          params=lambda p, t: p["datasets"].update(bad={"loader": "zsre_mend", "path": "absent.json", "target": "alt",
                                                        "loc_question_mark": False})),
    Fault("dataset entry without a required option", "params.yaml datasets.bad: missing required key(s) 'target', 'loc_question_mark'", ("--dataset", "bad"),
          params=lambda p, t: p["datasets"].update(bad={"loader": "zsre_mend", "path": "x.json"})),
    # -- data files
    Fault("malformed JSON row", "bad.json: row 1: malformed JSON (lexical error: invalid char in json text.)", ("--dataset", "bad"),
          params=_data('[{"src": "a", "alt": "b"},\n{"src": oops}]')),
    Fault("required field missing", "bad.json: row 1: field 'alt': missing (strict mode; set strict: false to skip and count such rows)", ("--dataset", "bad"),
          params=_data(_rows(ZSRE_ROW, {k: v for k, v in ZSRE_ROW.items() if k != "alt"}))),
    Fault("field of the wrong type", "bad.json: row 1: field 'alt': expected a string, got int 7", ("--dataset", "bad"), params=_data(_rows(ZSRE_ROW, {**ZSRE_ROW, "alt": 7}))),
    Fault("empty string field", "bad.json: row 1: field 'alt': empty string ''", ("--dataset", "bad"), params=_data(_rows(ZSRE_ROW, {**ZSRE_ROW, "alt": ""}))),
    Fault("empty file", "bad.json: the file is empty (expected a JSON array of objects or JSON Lines)", ("--dataset", "bad"), params=_data("")),
    Fault("JSON array never closed", "bad.json: the JSON array is not closed (the file ends after row 1)", ("--dataset", "bad"), params=_data(_rows(ZSRE_ROW, ZSRE_ROW)[:-1])),
    Fault("file ends inside a row", "bad.json: row 1: malformed JSON (the file ends inside the row)", ("--dataset", "bad"), params=_data(_rows(ZSRE_ROW, ZSRE_ROW)[:-30])),
    Fault("bad JSON Lines row", "bad.jsonl: row 1: malformed JSON (Expecting property name enclosed in double quotes", ("--dataset", "bad"),
          params=_data(json.dumps(ZSRE_ROW) + "\n{broken\n", name="bad.jsonl")),
    Fault("a row that is not an object", "bad.json: row 1: field '<row>': expected a JSON object, got list", ("--dataset", "bad"), params=_data(_rows(ZSRE_ROW, ["a", "list"]))),
    Fault("CounterFact row without its target", "bad.json: row 0: field 'target_new': missing", ("--dataset", "bad"),
          params=_data(_rows({"prompt": "The capital of {} is", "subject": "X", "ground_truth": "Y",
                              "rephrase_prompt": "X's capital is", "locality_prompt": "Z is in",
                              "locality_ground_truth": "W"}), loader="counterfact")),
    Fault("a top-level object instead of rows", "bad.json: expected a JSON array or JSON Lines, found an object with keys ['data']", ("--dataset", "bad"),
          params=_data(json.dumps({"data": [ZSRE_ROW, ZSRE_ROW]}))),
    Fault("bytes that are not UTF-8", f"bad.json: row 1: not valid UTF-8 (byte {BAD_BYTE})", ("--dataset", "bad"),
          params=_data(_rows(ZSRE_ROW, ZSRE_ROW).encode()[:BAD_BYTE] + b"\xff\xfe"
                       + _rows(ZSRE_ROW, ZSRE_ROW).encode()[BAD_BYTE:])),
    Fault("every row skipped in lenient mode", "re:bad.json holds no usable records: 2 rows skipped of 2 read; top reasons: field 'answers': missing \\(2 rows, e.g. row 0\\)", ("--dataset", "bad"),
          params=_data(_rows({"src": "a"}, {"src": "b"}), strict=False)),
    # -- model files
    Fault("config.json broken", "re:could not load model '.*broken-model': It looks like the config file at .* is not a valid JSON file", ("--model", "broken"), params=_model(_truncate("config.json", 20))),
    Fault("model.safetensors missing", "re:could not load model '.*broken-model': Error no file named model.safetensors", ("--model", "broken"),
          params=_model(lambda folder: (folder / "model.safetensors").unlink())),
    Fault("model.safetensors truncated", "re:could not load model '.*broken-model': .*model.safetensors", ("--model", "broken"),
          params=_model(_truncate("model.safetensors", 4096))),
    Fault("NaN in a weight before editing", "re:broken.*holds NaN", ("--model", "broken"), params=_model(_nan_weight)),
    # -- values a later params layer hides, misspelt sections
    Fault("bad value hidden by a family override", "params.yaml editors.ft.default.lr: expected a number, got 'fast'",
          params=_hidden_bad_value),
    Fault("misspelt editor section", "params.yaml editors.ftt: unknown editor; did you mean 'ft'?",
          params=_set("editors.ftt", {"default": {"lr": 0.1}})),
    Fault("misspelt family section", "params.yaml editors.ft.lama: neither a model family (gemma, gpt2, gptj, llama, mistral, phi3, "
          "qwen2) nor one of default, grid, variants; did you mean 'llama'?", params=_set("editors.ft.lama", {"lr": 0.1})),
    Fault("unknown editor in a model's hparams", "params.yaml models.t-gpt2.hparams.wsie: unknown editor; did you mean 'wise'?",
          params=_set("models.t-gpt2.hparams.wsie", {"layer": 1})),
    Fault("misspelt model name", "unknown model 't-gtp2'; did you mean 't-gpt2'?", ("--model", "t-gtp2")),
    # -- prompts
    Fault("a 100 KB prompt", "dataset 'bad': 1 edit(s) have prompt + target longer than the context of model 't-gpt2' "
          "(64 tokens), e.g. record 0 (uid 0): 75005 tokens. Skip them with datasets.bad.max_prompt_chars and "
          "long_prompts: skip", ("--dataset", "bad"), params=_data(_rows({**ZSRE_ROW, "src": "why " * 25_000}, ZSRE_ROW))),
    Fault("a prompt longer than the context", "longer than the context of model 't-gpt2' (64 tokens), e.g. record 0 "
          "(uid 0): 1805 tokens", ("--dataset", "bad"),
          params=_data(_rows({**ZSRE_ROW, "src": "why " * 600}, ZSRE_ROW))),
    # -- the output folder
    Fault("corrupt checkpoint", "re:out/checkpoint.pt: not a readable lifelong state file \\(UnpicklingError: Weights only", ("--resume",), extra={"out_files": {"checkpoint.pt": b"not a checkpoint"}}),
    Fault("truncated checkpoint", "re:out/checkpoint.pt: not a readable lifelong state file \\(RuntimeError: PytorchStreamReader", ("--resume",),
          extra={"out_files": {"checkpoint.pt": b"PK\x03\x04" + bytes(60)}}),
    Fault("two runs on one --out", "re:out is in use by another run \\(PID \\d+\\): wait for it to finish",
          extra={"hold_lock": True}),
    Fault("full disk while writing results", "re:No space left on device: .*out/per_edit.csv \\(errno 28\\); the files "
          "already in the output folder are intact", extra={"full_disk": True}, exit_code=1),
]


def _base_params(params_file: Path) -> dict:
    return yaml.safe_load(params_file.read_text())


def _command(params_path: Path, out: Path, fault: Fault) -> list[str]:
    base = {"--model": "t-gpt2", "--dataset": "world", "--editor": "ft", "--n-edits": "2", "--blocks": "1",
            "--params": str(params_path), "--out": str(out)}
    extra: list[str] = []
    args = list(fault.args)
    while args:
        flag = args.pop(0)
        if flag == "--resume":                  # the one flag without a value
            extra.append(flag)
            continue
        value = args.pop(0)
        if flag in base:
            base[flag] = value
        else:
            extra += [flag, value]
    return ["run", *[x for pair in base.items() for x in pair], "--no-progress", *extra]


def _inject(fault: Fault, params_file: Path, tmp_path: Path) -> list[str]:
    params_path = tmp_path / "params.yaml"
    if "raw_params" in fault.extra:
        params_path.write_text(fault.extra["raw_params"])
    else:
        params = _base_params(params_file)
        if fault.params:
            fault.params(params, tmp_path)
        params_path.write_text(yaml.safe_dump(params))
    return _command(params_path, tmp_path / "out", fault)


EARLIER = '{"reliability": 0.5, "note": "a result computed before the fault"}\n'


def _full_disk(monkeypatch):
    """Every result write fails with ENOSPC after writing part of its file (chmod cannot simulate this as root)."""
    import errno

    from lifelong.core import io

    real = io.atomic_write

    def failing(path, write):
        def partial(tmp: Path):
            tmp.write_bytes(b'{"reliab')
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, partial)

    monkeypatch.setattr(io, "atomic_write", failing)


def _hold_lock(out: Path):
    """Another process holding the output folder's lock for the duration of the test."""
    import subprocess
    import sys

    holder = subprocess.Popen([sys.executable, "-c", "import time\nfrom pathlib import Path\n"
                               "from lifelong.cli import exclusive\n"
                               f"with exclusive(Path({str(out)!r})):\n"
                               "    print('held', flush=True); time.sleep(120)"], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def _check(fault: Fault, params_file, tmp_path, capsys, monkeypatch) -> str:
    from lifelong.cli import main

    argv = _inject(fault, params_file, tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    earlier = out / "summary.json"     # the result of an earlier run in this folder: it must survive
    earlier.write_text(EARLIER)
    for name, data in fault.extra.get("out_files", {}).items():
        (out / name).write_bytes(data)
    if fault.extra.get("full_disk"):
        _full_disk(monkeypatch)
    holder = _hold_lock(out) if fault.extra.get("hold_lock") else None
    try:
        code = main(argv)
    except SystemExit as exc:            # argparse's own usage errors
        code = exc.code
    finally:
        if holder:
            holder.kill()
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1] if err.strip() else ""
    assert code == fault.exit_code, f"exit code {code}; stderr: {err!r}"
    assert "Traceback" not in err, err
    if fault.message.startswith("re:argument"):   # argparse: usage, then one line naming the argument
        assert last.startswith("python -m lifelong run: error: ") and re.search(fault.message[3:], last), err
    else:
        assert err.startswith("error: ") and err.count("\n") == 1, err
        found = re.search(fault.message[3:], err) if fault.message.startswith("re:") else fault.message in err
        assert found, err
    assert earlier.read_text() == EARLIER
    assert not list(out.glob(".*.tmp")), "a half-written temporary file was left behind"
    return err


@pytest.mark.parametrize("fault", [pytest.param(f, id=f.name, marks=[pytest.mark.xfail(strict=True)] if f.gap else [])
                                   for f in FAULTS])
def test_fault_gets_one_clear_line_and_loses_nothing(fault, params_file, tmp_path, capsys, monkeypatch):
    _check(fault, params_file, tmp_path, capsys, monkeypatch)


def test_a_full_disk_leaves_the_earlier_results_intact(params_file, tmp_path, capsys, monkeypatch):
    """The writer fails with ENOSPC mid-file: the earlier summary.json is untouched, no temporary file is left,
    and the lock is released (a rerun may start at once)."""
    from lifelong.cli import exclusive, main

    argv = _inject(Fault("full disk", ""), params_file, tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_text(EARLIER)
    _full_disk(monkeypatch)
    assert main(argv) == 1
    assert (out / "summary.json").read_text() == EARLIER
    assert sorted(p.name for p in out.iterdir() if p.name != ".lock") == ["summary.json"]
    with exclusive(out):
        assert (out / ".lock.pid").read_text() == str(os.getpid())


# -- docs/reliability.md lists the same faults ---------------------------------------------------------

def _code(text: str) -> str:
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def table_row(number: int, fault: Fault) -> str:
    """The fault's row in docs/reliability.md's table."""
    expected = _code(fault.message[3:]) + " (a regular expression)" if fault.message.startswith("re:") else _code(
        fault.message)
    if fault.gap:
        return f"| {number} | {fault.name} | **gap** | now: {fault.now}; should be: {expected} |"
    return f"| {number} | {fault.name} | handled | {expected} |"


def test_the_reliability_table_lists_every_fault_with_its_message():
    rows = [line for line in RELIABILITY.read_text(encoding="utf-8").splitlines() if re.match(r"\| \d+ \| ", line)]
    expected = [table_row(i, fault) for i, fault in enumerate(FAULTS, 1)]
    assert rows == expected, "docs/reliability.md's fault table differs from tests/test_faults.py FAULTS"
    assert len(FAULTS) >= 40 and all(fault.now for fault in FAULTS if fault.gap)


if __name__ == "__main__":   # `python tests/test_faults.py`: rewrite docs/reliability.md's fault table from FAULTS
    text = RELIABILITY.read_text(encoding="utf-8").splitlines()
    first = next(i for i, line in enumerate(text) if re.match(r"\| \d+ \| ", line))
    last = max(i for i, line in enumerate(text) if re.match(r"\| \d+ \| ", line))
    text[first:last + 1] = [table_row(i, fault) for i, fault in enumerate(FAULTS, 1)]
    RELIABILITY.write_text("\n".join(text) + "\n", encoding="utf-8")
    print(f"{RELIABILITY}: {len(FAULTS)} faults")
