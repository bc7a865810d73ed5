"""Run one experiment: (model, dataset, editor, number of edits, hyperparameters) -> results on disk.

Protocol. The first `n_edits * n_blocks` records are split into `n_blocks` blocks of `n_edits`.
Each block starts from the unedited model (`editor.reset()`), is edited in turns of
`hparams.turn_size`, finalised, and evaluated on all of its edits (the WISE paper's "evaluate after
the T-th edit, then roll back"; with n_blocks = 1 it is UltraEdit's single lifelong stream).
`eval_at` adds evaluation checkpoints inside a block: at each count, every edit made so far is scored,
which gives a whole scaling curve from one run.

Outputs in `out_dir` (all written atomically):
  summary.json   headline metrics, pre-edit metrics, timings, peak memory, metric definitions
  per_edit.csv   one row per edit
  curve.csv      one row per evaluation checkpoint (when eval_at is given)
  checkpoint.pt  every `checkpoint_every` turns; `resume=True` continues from it
"""
from __future__ import annotations

import dataclasses
import math
import os
import random
import resource
import signal
import time
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from . import io
from .config import load_params
from .datasets import dataset_metrics, load_dataset, locality_pool
from .editors import EditContext, build_hparams, editor_class
from .editors.base import fingerprint
from .errors import ConfigError, LifelongError, MissingDataError
from .evaluate import Predictions, Scores, chunked, score_stream
from .metrics import DEFINITIONS, EXTRA_DEFINITIONS
from .modeling import context_length, family_of, load_model
from .scoring import PPL_CLIP
from .paths import PARAMS, resolve


@dataclass
class RunSpec:
    model: str
    dataset: str
    editor: str
    n_edits: int
    out_dir: Path
    overrides: dict[str, Any] = field(default_factory=dict)
    n_blocks: int = 1
    eval_at: tuple[int, ...] = ()
    checkpoint_every: int = 0          # turns; 0 = never
    resume: bool = False
    seed: int = 0
    params_path: Path = PARAMS
    eval_batch_size: int = 256
    device: str = "auto"
    progress: bool = True

    def identity(self) -> dict[str, Any]:
        """What a checkpoint must match to be resumed."""
        return {"model": self.model, "dataset": self.dataset, "editor": self.editor, "n_edits": self.n_edits,
                "n_blocks": self.n_blocks, "eval_at": list(self.eval_at), "seed": self.seed,
                "overrides": dict(sorted(self.overrides.items()))}


def resolve_model(name: str, params: dict[str, Any]) -> tuple[str, str]:
    """params.yaml `models.NAME` -> (local path or hub id, dtype)."""
    models = params.get("models") or {}
    if name not in models:
        raise LifelongError(f"unknown model {name!r}; known models: {', '.join(sorted(models)) or '(none)'}")
    entry = models[name] or {}
    dtype = entry.get("dtype", "float32")
    if entry.get("hub"):
        return str(entry["hub"]), dtype
    if not entry.get("path"):
        raise ConfigError(f"params.yaml models.{name}: needs `path` (a local model) or `hub` (a hub id)")
    path = resolve(entry["path"])
    if not (path / "config.json").exists():
        raise LifelongError(f"model {name!r} is not built yet: {path} has no config.json. "
                            f"Build it with `dvc repro pretrain@{name}` (or `make repro`).")
    return str(path), dtype


def run(spec: RunSpec) -> dict[str, Any]:
    params = load_params(spec.params_path)
    if spec.n_edits < 1 or spec.n_blocks < 1:
        raise LifelongError(f"--n-edits and --blocks must be >= 1 (got {spec.n_edits}, {spec.n_blocks})")
    source = load_dataset(spec.dataset, params)
    extras = dataset_metrics(spec.dataset, params)
    needed = spec.n_edits * spec.n_blocks
    if needed > len(source):
        raise LifelongError(f"dataset {spec.dataset!r} holds {len(source)} edits; the run needs "
                            f"{spec.n_edits} x {spec.n_blocks} block(s) = {needed}")
    bad_eval = [k for k in spec.eval_at if not 1 <= k <= spec.n_edits]
    if bad_eval:
        raise LifelongError(f"--eval-at values must lie in 1..{spec.n_edits}; got {bad_eval}")

    device = ("cuda" if torch.cuda.is_available() else "cpu") if spec.device == "auto" else spec.device
    path, dtype = resolve_model(spec.model, params)
    model, tokenizer = load_model(path, dtype=dtype, device=device)
    family = family_of(model).name
    hparams = build_hparams(spec.editor, params, family, spec.overrides, model=spec.model)
    _seed_everything(spec.seed)
    context = EditContext(family=family_of(model), device=torch.device(device), seed=spec.seed,
                          locality_pool=locality_pool(spec.dataset, params, source),
                          model_fingerprint=fingerprint(model))
    editor = editor_class(spec.editor)(model, tokenizer, hparams, context)
    out = Path(spec.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    max_length = context_length(model)
    state = _RunState(extras=extras, max_length=max_length)
    ckpt_path = out / "checkpoint.pt"
    if spec.resume and ckpt_path.exists():
        state = _resume(ckpt_path, spec, hparams, editor)
        state.extras, state.max_length = extras, max_length
    elif spec.resume:
        print(f"note: no checkpoint at {ckpt_path}; starting from the beginning")

    if state.pre is None and state.max_length:  # before any edit: every edit must fit the model
        _check_context(source.records(0, needed), tokenizer, state.max_length, spec)
    if state.pre is None:  # pre-edit scores of every record the run will edit
        t0 = time.perf_counter()
        state.pre = score_stream(model, tokenizer, source.records(0, needed), batch_size=spec.eval_batch_size,
                                 extras=state.extras, max_length=state.max_length)
        state.eval_seconds += time.perf_counter() - t0

    turn_size = hparams.turn_size
    turns_per_block = math.ceil(spec.n_edits / turn_size)
    bar = tqdm(total=turns_per_block * spec.n_blocks, initial=state.block * turns_per_block + state.turn,
               desc=f"{spec.editor} on {spec.model}", unit="turn", disable=not spec.progress)
    for block in range(state.block, spec.n_blocks):
        first = block * spec.n_edits
        if state.turn == 0 and block > 0:
            editor.reset()  # roll back to the unedited model between blocks
        stream = source.records(first + state.turn * turn_size, first + spec.n_edits)
        for turn in range(state.turn, turns_per_block):
            records = list(islice(stream, turn_size))
            t0 = time.perf_counter()
            stats = editor.edit_turn(records)
            state.edit_seconds += time.perf_counter() - t0
            done = min((turn + 1) * turn_size, spec.n_edits)
            bar.update(1)
            if stats:
                bar.set_postfix({k: f"{v:.3g}" for k, v in stats.items() if isinstance(v, (int, float))}, refresh=False)
            for k in (k for k in spec.eval_at if done - min(turn_size, done) < k <= done and k < spec.n_edits):
                state.curve.append(_evaluate(spec, model, tokenizer, source, first, k, state).means()
                                   | {"block": block, "n_edits": k, "edit_seconds": state.edit_seconds})
            state.turn = turn + 1
            if spec.checkpoint_every and state.turn % spec.checkpoint_every == 0 and state.turn < turns_per_block:
                _checkpoint(ckpt_path, spec, hparams, editor, state)
                _test_kill_point(block, state.turn)
        t0 = time.perf_counter()
        editor.finalize()
        state.edit_seconds += time.perf_counter() - t0
        scores = _evaluate(spec, model, tokenizer, source, first, spec.n_edits, state)
        if spec.eval_at:
            state.curve.append(scores.means() | {"block": block, "n_edits": spec.n_edits,
                                                 "edit_seconds": state.edit_seconds})
        state.rows.append(_rows(spec, source, first, block, scores, state.pre))
        state.block, state.turn = block + 1, 0
        if spec.checkpoint_every and block + 1 < spec.n_blocks:
            _checkpoint(ckpt_path, spec, hparams, editor, state)
    bar.close()

    per_edit = pd.concat(state.rows, ignore_index=True)
    summary = _summary(spec, family, hparams, editor, per_edit, state)
    io.write_csv(out / "per_edit.csv", per_edit)
    if spec.eval_at:
        io.write_csv(out / "curve.csv", pd.DataFrame(state.curve))
    io.write_json(out / "summary.json", summary)
    ckpt_path.unlink(missing_ok=True)
    return summary


# -- one grid cell: a (model, dataset, editor) at every T --------------------------------------------

def n_blocks(n_edits: int, edits_per_point: int, available: int | None = None) -> int:
    """How many rolled-back blocks of T edits make one grid point (about edits_per_point edits)."""
    blocks = max(1, math.ceil(edits_per_point / n_edits))
    if available is not None:
        blocks = max(1, min(blocks, available // n_edits))
    return blocks


def cell_name(model: str, dataset: str, editor: str) -> str:
    return f"{model}__{dataset}__{editor}"


def run_cell(*, model: str, dataset: str, editor: str, n_edits: list[int] | tuple[int, ...], edits_per_point: int,
             out_dir: str | Path, seed: int = 0, overrides: dict[str, Any] | None = None,
             params_path: str | Path = PARAMS, skip_missing_data: bool = True, progress: bool = False) -> pd.DataFrame:
    """Run one editor on one model and dataset at every T in `n_edits`, each into `out_dir/T{n}/`.

    With skip_missing_data, a dataset whose file is not in the data directory is not an error: the cell
    writes `out_dir/skipped.json` with the reason, and the report lists it as skipped. (The CLI, which
    runs one explicit experiment, always fails with the message instead.)
    Returns one row per T with the summary's headline numbers.
    """
    out = Path(out_dir)
    params = load_params(params_path)
    try:
        available = len(load_dataset(dataset, params))
    except MissingDataError as exc:
        if not skip_missing_data:
            raise
        io.write_json(out / "skipped.json", {"model": model, "dataset": dataset, "editor": editor,
                                             "reason": str(exc)})
        print(f"skipped: {exc}")
        return pd.DataFrame()
    rows = []
    for n in n_edits:
        spec = RunSpec(model=model, dataset=dataset, editor=editor, n_edits=int(n), seed=seed,
                       n_blocks=n_blocks(int(n), edits_per_point, available), overrides=dict(overrides or {}),
                       out_dir=out / f"T{n}", params_path=Path(params_path), progress=progress)
        summary = run(spec)
        rows.append({k: summary.get(k) for k in ("n_edits", "n_blocks", "reliability", "generalization", "locality",
                                                 "locality_agreement", "pre_reliability", "seconds_per_edit")})
    return pd.DataFrame(rows)


# -- internals ------------------------------------------------------------------------------------

@dataclass
class _RunState:
    block: int = 0
    turn: int = 0
    edit_seconds: float = 0.0
    eval_seconds: float = 0.0
    pre: Scores | None = None
    extras: tuple[str, ...] = ()        # the dataset's optional metrics (evaluate.EXTRA_METRICS)
    max_length: int | None = None       # the model's context; longer inputs are cut from the left
    rows: list[pd.DataFrame] = field(default_factory=list)
    curve: list[dict[str, Any]] = field(default_factory=list)


def _evaluate(spec: RunSpec, model, tokenizer, source, first: int, count: int, state: _RunState) -> Scores:
    """Score the first `count` edits of the block that starts at record `first`."""
    t0 = time.perf_counter()
    reference = Predictions.from_list(state.pre.locality_predictions.slice(first, first + count))
    scores = score_stream(model, tokenizer, source.records(first, first + count), batch_size=spec.eval_batch_size,
                          reference=reference, extras=state.extras, max_length=state.max_length)
    state.eval_seconds += time.perf_counter() - t0
    return scores


def _rows(spec: RunSpec, source, first: int, block: int, scores: Scores, pre: Scores) -> pd.DataFrame:
    sl = slice(first, first + spec.n_edits)
    uids = [r.uid for r in source.records(first, first + spec.n_edits)]
    return pd.DataFrame({
        "block": block, "index": np.arange(first, first + spec.n_edits), "uid": uids,
        "reliability": scores.reliability, "generalization": scores.generalization,
        "locality": scores.locality, "locality_agreement": scores.locality_agreement,
        "pre_reliability": pre.reliability[sl], "pre_generalization": pre.generalization[sl],
        "pre_locality": pre.locality[sl],
        **scores.extra, **{f"pre_{k}": v[sl] for k, v in pre.extra.items()},
    })


def _summary(spec: RunSpec, family: str, hparams, editor, per_edit: pd.DataFrame, state: _RunState) -> dict[str, Any]:
    mean = lambda col: float(per_edit[col].mean()) if per_edit[col].notna().any() else None
    extra_columns = [c for c in per_edit.columns if c in EXTRA_DEFINITIONS]
    extra = {f"{p}{c}": mean(f"{p}{c}") for c in extra_columns for p in ("", "pre_")}
    for p in ("", "pre_") if "target_ppl" in per_edit else ():
        ppl = per_edit[f"{p}target_ppl"].dropna()
        extra |= {f"{p}target_ppl_clip100": float(ppl.clip(upper=PPL_CLIP).mean()),
                  f"{p}target_ppl_median": float(ppl.median())}
    return {
        "model": spec.model, "family": family, "dataset": spec.dataset, "editor": spec.editor,
        "n_edits": spec.n_edits, "n_blocks": spec.n_blocks, "seed": spec.seed,
        "reliability": mean("reliability"), "generalization": mean("generalization"),
        "locality": mean("locality"), "locality_agreement": mean("locality_agreement"),
        "pre_reliability": mean("pre_reliability"), "pre_generalization": mean("pre_generalization"),
        "pre_locality": mean("pre_locality"), **extra,
        "edit_seconds": round(state.edit_seconds, 3), "eval_seconds": round(state.eval_seconds, 3),
        "seconds_per_edit": round(state.edit_seconds / (spec.n_edits * spec.n_blocks), 5),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "hparams": dataclasses.asdict(hparams),
        "editor_report": getattr(editor, "report", {}) or {},
        "metric_definitions": DEFINITIONS | {c: EXTRA_DEFINITIONS[c] for c in extra_columns},
        "protocol": f"{spec.n_blocks} block(s) of {spec.n_edits} edits; each block starts from the unedited "
                    "model and is evaluated after its last edit",
    }


def _check_context(records, tokenizer, max_length: int, spec: RunSpec, chunk: int = 4096) -> None:
    """Editors train on prompt + target in full, so an edit longer than the model's context is refused
    up front, naming the records. (Evaluation instead cuts long inputs from the left, keeping the answer.)"""
    too_long, offset = [], 0
    for block in chunked(records, chunk):
        prompts = tokenizer([r.prompt for r in block])["input_ids"]
        answers = tokenizer([" " + r.target for r in block], add_special_tokens=False)["input_ids"]
        for i, (p, a) in enumerate(zip(prompts, answers)):
            if len(p) + len(a) - 1 > max_length:
                too_long.append((offset + i, block[i].uid, len(p) + len(a) - 1))
        offset += len(block)
    if too_long:
        examples = ", ".join(f"record {i} (uid {u}): {n} tokens" for i, u, n in too_long[:3])
        raise LifelongError(
            f"dataset {spec.dataset!r}: {len(too_long)} edit(s) have prompt + target longer than the context of "
            f"model {spec.model!r} ({max_length} tokens), e.g. {examples}. Skip them with "
            f"datasets.{spec.dataset}.max_prompt_chars and long_prompts: skip, or use a model with a longer context.")


def _checkpoint(path: Path, spec: RunSpec, hparams, editor, state: _RunState) -> None:
    io.write_torch(path, {
        "identity": spec.identity(), "hparams": dataclasses.asdict(hparams),
        "editor_state": editor.state_dict(), "block": state.block, "turn": state.turn,
        "edit_seconds": state.edit_seconds, "eval_seconds": state.eval_seconds,
        "pre": state.pre, "rows": state.rows, "curve": state.curve, "rng": _rng_state(),
    })


def _resume(path: Path, spec: RunSpec, hparams, editor) -> _RunState:
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    want = spec.identity() | {"hparams": dataclasses.asdict(hparams)}
    have = ckpt["identity"] | {"hparams": ckpt["hparams"]}
    diff = {k: (have.get(k), want[k]) for k in want if have.get(k) != want[k]}
    if diff:
        details = "; ".join(f"{k}: checkpoint has {a!r}, this run has {b!r}" for k, (a, b) in diff.items())
        raise LifelongError(f"{path} belongs to a different run and cannot be resumed ({details}). "
                            "Remove it or choose another --out.")
    editor.load_state_dict(ckpt["editor_state"])
    _set_rng_state(ckpt["rng"])
    print(f"resumed from {path}: block {ckpt['block']}, turn {ckpt['turn']}")
    return _RunState(block=ckpt["block"], turn=ckpt["turn"], edit_seconds=ckpt["edit_seconds"],
                     eval_seconds=ckpt["eval_seconds"], pre=ckpt["pre"], rows=ckpt["rows"], curve=ckpt["curve"])


def _test_kill_point(block: int, turn: int) -> None:
    """Fault injection for the resume test: LIFELONG_TEST_KILL_AT=block:turn SIGKILLs the process right
    after that checkpoint is written, exactly like an external `kill -9`."""
    if os.environ.get("LIFELONG_TEST_KILL_AT") == f"{block}:{turn}":
        os.kill(os.getpid(), signal.SIGKILL)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
