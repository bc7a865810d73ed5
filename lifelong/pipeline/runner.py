"""Run one experiment: (model, dataset, editor, number of edits, hyperparameters) -> results on disk.

Protocol. The first `n_edits * n_blocks` records are split into `n_blocks` blocks of `n_edits`.
Each block starts from the unedited model (`editor.reset()`), is edited in turns of
`hparams.turn_size`, finalised, and evaluated on all of its edits (the WISE paper's "evaluate after
the T-th edit, then roll back"; with n_blocks = 1 it is UltraEdit's single lifelong stream).
`eval_at` adds evaluation checkpoints inside a block, at turn boundaries: at each count, every edit
made so far is scored, which gives a whole scaling curve from one run. With `eval_sample` S, a checkpoint
past S edits scores a seeded sample of S of them instead (`eval_sample_indices`), and the final evaluation
scores every edit and also reports the sample's means, so the curve is one estimator end to end.

The run is four steps, each a function: `setup` (load, validate, resume), `edit_block` (the turns
of one block), `evaluate` (score the edits made so far) and `finish` (write the results).

Outputs in `out_dir` (all written atomically):
  summary.json   headline metrics, pre-edit metrics, timings, peak memory, metric definitions, the held-out
                 set (eval/retention.py) and the named lists scored (data/named_lists.py)
  per_edit.csv   one row per edit
  curve.csv      one row per evaluation checkpoint (when eval_at is given): means, how many edits were scored
                 (`scored`: all or sample), cumulative edit/eval seconds, current and peak RSS
  checkpoint.pt  every `checkpoint_every` turns; `resume=True` continues from it (tensors + JSON)
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from ..core import io
from ..core.config import load_params
from ..core.errors import ConfigError, LifelongError
from ..core.machine import memory_figures, peak_rss_mb, rss_mb
from ..core.paths import ARTIFACTS, PARAMS
from ..data import dataset_metrics, load_dataset, locality_pool
from ..data.named_lists import list_report
from ..editors import EditContext, Editor, EditorHparams, build_hparams, check_editor_sections, editor_class
from ..eval import registry, retention
from ..eval.evaluate import Predictions, Scores, score_stream
from ..models.loading import (check_dtype, context_length, fingerprint, input_device, load_model, placement,
                              resolve_device, resolve_model, uses_chat_template)
from ..models.modules import family_of
from . import checkpoint, prompt_lengths
from .checkpoint import RunState

# Called after each checkpoint is written, with (block, turns done in the block). Tests inject one that
# kills the process, to prove that a resumed run gives the results of an uninterrupted one.
OnCheckpoint = Callable[[int, int], None]


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
    device: str | None = None          # auto, cpu, cuda, cuda:K; None: params.yaml runtime.device (default auto)
    progress: bool = True
    save_model: Path | None = None     # save the edited model of the last block here (editors/artifact.py)
    variant: str | None = None         # a named variant of the editor (pipeline/cell.py), e.g. MEMIT's "mass"
    threads: int | None = None         # torch CPU threads; None: params.yaml runtime.threads; 0: torch's default
    eval_sample: int = 0               # score a seeded sample of this many past edits at eval_at checkpoints; 0: all

    @property
    def label(self) -> str:
        """The editor as reports name it: `memit`, or `memit-mass` for a variant."""
        return f"{self.editor}-{self.variant}" if self.variant else self.editor

    def identity(self) -> dict[str, Any]:
        """What a checkpoint must match to be resumed."""
        return {"model": self.model, "dataset": self.dataset, "editor": self.label, "n_edits": self.n_edits,
                "n_blocks": self.n_blocks, "eval_at": list(self.eval_at), "seed": self.seed,
                "overrides": dict(sorted(self.overrides.items())), "eval_sample": self.eval_sample}


@dataclass
class Run:
    """One experiment, set up: what every step needs."""

    spec: RunSpec
    source: Any                        # the dataset (data/base.EditSource)
    options: tuple[str, ...]           # the dataset's optional metrics (eval/registry.OPTIONS)
    model: torch.nn.Module
    tokenizer: Any
    hparams: EditorHparams
    editor: Editor
    out: Path
    max_length: int | None             # the model's context; longer evaluation inputs are cut from the left
    state: RunState
    chat_template: bool = False        # generation metrics through the chat template (models.NAME.chat_template)
    heldout: retention.HeldoutConfig | None = None   # params.yaml heldout (None: not measured)
    params: dict[str, Any] = field(default_factory=dict)
    prompt_lengths: dict[str, Any] = field(default_factory=dict)   # the summary's `prompt_lengths` (PROMPT_POLICY)

    @property
    def turns_per_block(self) -> int:
        return math.ceil(self.spec.n_edits / self.hparams.turn_size)

    @property
    def checkpoint_path(self) -> Path:
        return self.out / "checkpoint.pt"

    def identity(self) -> dict[str, Any]:
        return self.spec.identity() | {"hparams": dataclasses.asdict(self.hparams), "chat_template": self.chat_template}


def run(spec: RunSpec, *, on_checkpoint: OnCheckpoint | None = None) -> dict[str, Any]:
    """Run the experiment of `spec` (resuming it if asked) and return its summary."""
    r = setup(spec)
    if r.state.pre is None:  # pre-edit scores of every record the run will edit, and the held-out set
        t0 = time.perf_counter()
        r.state.pre = score_stream(r.model, r.tokenizer, r.source.records(0, spec.n_edits * spec.n_blocks),
                                   batch_size=spec.eval_batch_size, extras=r.options, max_length=r.max_length,
                                   prompt_ends=r.editor.set_prompt_ends, chat_template=r.chat_template)
        if r.heldout is not None:
            held = retention.build(r.heldout, r.params, r.model, r.tokenizer, max_length=r.max_length,
                                   prompt_ends=r.editor.set_prompt_ends)
            r.state.heldout = dataclasses.asdict(held)
            n = len(r.state.pre.reliability)
            r.state.pre.extra |= {k: np.full(n, np.nan if v is None else v) for k, v in held.pre.items()
                                  if k != "heldout_ppl_ratio"}
        r.state.eval_seconds += time.perf_counter() - t0
    bar = tqdm(total=r.turns_per_block * spec.n_blocks, initial=r.state.block * r.turns_per_block + r.state.turn,
               desc=f"{spec.editor} on {spec.model}", unit="turn", disable=not spec.progress)
    for block in range(r.state.block, spec.n_blocks):
        edit_block(r, block, bar, on_checkpoint)
    bar.close()
    return finish(r)


def setup(spec: RunSpec) -> Run:
    """Load everything, check the request against the data and the model, and resume if asked."""
    params = load_params(spec.params_path)
    if spec.n_edits < 1 or spec.n_blocks < 1:
        raise LifelongError(f"--n-edits and --blocks must be >= 1 (got {spec.n_edits}, {spec.n_blocks})")
    editor_class(spec.editor)
    check_editor_sections(params)   # before the data and the model load: a typo costs no waiting
    source = load_dataset(spec.dataset, params)
    options = dataset_metrics(spec.dataset, params)
    needed = spec.n_edits * spec.n_blocks
    if needed > len(source):
        raise LifelongError(f"dataset {spec.dataset!r} holds {len(source)} edits; the run needs "
                            f"{spec.n_edits} x {spec.n_blocks} block(s) = {needed}")
    bad_eval = [k for k in spec.eval_at if not 1 <= k <= spec.n_edits]
    if bad_eval:
        raise LifelongError(f"--eval-at values must lie in 1..{spec.n_edits}; got {bad_eval}")
    if not isinstance(spec.eval_sample, int) or spec.eval_sample < 0:
        raise LifelongError(f"--eval-sample must be an integer >= 0 (0: score every edit), got {spec.eval_sample!r}")

    threads = spec.threads if spec.threads is not None else (params.get("runtime") or {}).get("threads", 0)
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 0:
        where = "--threads" if spec.threads is not None else "params.yaml runtime.threads"
        raise LifelongError(f"{where}: expected an integer >= 0 (0: torch's default, one per core), got {threads!r}")
    if threads:
        torch.set_num_threads(threads)
    deterministic = (params.get("runtime") or {}).get("deterministic", True)
    if not isinstance(deterministic, bool):
        raise ConfigError(f"params.yaml runtime.deterministic: expected true or false, got {deterministic!r}")
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    device = resolve_device(spec.device if spec.device is not None else (params.get("runtime") or {}).get("device"))
    path, dtype = resolve_model(spec.model, params)
    check_dtype(dtype, device, where=f"params.yaml models.{spec.model}.dtype ({dtype}) on {device}")
    model, tokenizer = load_model(path, dtype=dtype, device=device, **placement(spec.model, params))
    family = family_of(model)
    hparams = build_hparams(spec.editor, params, family.name, spec.overrides, model=spec.model,
                            overrides_from=f"params.yaml editors.{spec.editor}.variants.{spec.variant}"
                            if spec.variant else "--set")
    off_turn = [k for k in spec.eval_at if k % hparams.turn_size and k != spec.n_edits]
    if off_turn:  # evaluation happens between turns: k edits must be exactly the edits made so far
        raise LifelongError(f"--eval-at values must be multiples of the editor's turn_size ({hparams.turn_size}); "
                            f"got {off_turn}")
    checkpoint.seed_everything(spec.seed)
    context = EditContext(family=family, device=input_device(model), seed=spec.seed,
                          locality_pool=locality_pool(spec.dataset, params, source),
                          model_fingerprint=fingerprint(model), stats_dir=ARTIFACTS / "stats" / spec.model)
    editor = editor_class(spec.editor)(model, tokenizer, hparams, context)
    out = Path(spec.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    io.remove_stale_temporaries(out)   # what a killed write left; the checkpoint and results are whole or absent
    r = Run(spec, source, options, model, tokenizer, hparams, editor, out, context_length(model), RunState(),
            uses_chat_template(spec.model, params), retention.HeldoutConfig.from_params(params), params)
    if spec.resume and r.checkpoint_path.exists():
        r.state = checkpoint.load(r.checkpoint_path, r.identity(), editor)
        print(f"resumed from {r.checkpoint_path}: block {r.state.block}, turn {r.state.turn}")
    elif spec.resume:
        print(f"note: no checkpoint at {r.checkpoint_path}; starting from the beginning")
    if r.max_length:  # every edit must fit the model (checked again on resume: it counts what evaluation cuts)
        r.prompt_lengths |= prompt_lengths.check_context(source.records(0, needed), tokenizer, r.max_length,
                                                          dataset=spec.dataset, model=spec.model)
    return r


def edit_block(r: Run, block: int, bar, on_checkpoint: OnCheckpoint | None = None) -> None:
    """The turns of one block (from where a resumed run stands), its evaluation checkpoints, its final
    evaluation, and its per-edit rows."""
    spec, state, turn_size = r.spec, r.state, r.hparams.turn_size
    first = block * spec.n_edits
    if state.turn == 0 and block > 0:
        r.editor.reset()  # roll back to the unedited model between blocks
    stream = r.source.records(first + state.turn * turn_size, first + spec.n_edits)
    for turn in range(state.turn, r.turns_per_block):
        t0 = time.perf_counter()
        try:
            stats = r.editor.edit_turn(list(islice(stream, turn_size)))
        except (LifelongError, torch.OutOfMemoryError) as exc:
            raise _turn_failed(r, block, turn, exc) from None
        state.edit_seconds += time.perf_counter() - t0
        state.turn = turn + 1
        done = min(state.turn * turn_size, spec.n_edits)
        bar.update(1)
        if stats:
            bar.set_postfix({k: f"{v:.3g}" for k, v in stats.items() if isinstance(v, (int, float))}, refresh=False)
        if done in spec.eval_at and done < spec.n_edits:
            sample = eval_sample_indices(spec, done)
            state.curve.append(_curve_point(r, evaluate(r, first, done, sample).means(), block, done, sample))
            bar.write(_describe(state.curve[-1]))
        if spec.checkpoint_every and state.turn % spec.checkpoint_every == 0 and state.turn < r.turns_per_block:
            checkpoint.save(r.checkpoint_path, r.identity(), r.editor, state)
            if on_checkpoint is not None:
                on_checkpoint(block, state.turn)
    t0 = time.perf_counter()
    r.editor.finalize()
    state.edit_seconds += time.perf_counter() - t0
    scores = evaluate(r, first, spec.n_edits)
    if spec.eval_at:
        sample = eval_sample_indices(spec, spec.n_edits)
        if sample is not None:   # the sample's row (the curve's estimator), read off the exact scores: no rescoring
            state.curve.append(_curve_point(r, scores.take(sample).means(), block, spec.n_edits, sample))
        state.curve.append(_curve_point(r, scores.means(), block, spec.n_edits, None))
        bar.write(_describe(state.curve[-1]))
    state.rows.append(_rows(r, first, block, scores))
    state.block, state.turn = block + 1, 0
    if spec.checkpoint_every and block + 1 < spec.n_blocks:
        checkpoint.save(r.checkpoint_path, r.identity(), r.editor, state)


def _turn_failed(r: Run, block: int, turn: int, exc: BaseException) -> LifelongError:
    """The error of a failed turn, naming it. Out of memory also gives the memory figures and, for an editor whose
    failed turn leaves no trace (`Editor.atomic_turns`), writes a checkpoint of every completed turn first; other
    editors keep their last periodic checkpoint (`checkpoint_every: 1` loses nothing)."""
    what = f"{r.spec.editor}, block {block}, turn {turn + 1} of {r.turns_per_block}"
    kept = f" (the last checkpoint, {r.checkpoint_path}, holds the turns before it)" if r.checkpoint_path.exists() else ""
    if not isinstance(exc, torch.OutOfMemoryError):   # LifelongError: the editor left the model as before the turn
        return LifelongError(f"{what}: {exc}{kept}")
    if r.editor.atomic_turns:
        checkpoint.save(r.checkpoint_path, r.identity(), r.editor, r.state)   # state.turn: the turns completed
        kept = f"; {r.checkpoint_path} holds the {turn} completed turn(s) of this block (--resume continues)"
    return LifelongError(f"{what}: out of memory ({memory_figures(r.editor.context.device)}). Lower the editor's "
                         f"turn_size or batch_size, or use a larger device{kept}")


def evaluate(r: Run, first: int, count: int, sample: np.ndarray | None = None) -> Scores:
    """Score the first `count` edits of the block that starts at record `first` (only those at the offsets
    `sample`, when given)."""
    t0 = time.perf_counter()
    pre = r.state.pre
    index = np.arange(first, first + count) if sample is None else first + sample
    records = r.source.records(first, first + count) if sample is None else _records_at(r.source, index)
    scores = score_stream(r.model, r.tokenizer, records,
                          batch_size=r.spec.eval_batch_size,
                          reference=Predictions.from_list(pre.locality_predictions.take(index)),
                          lists_reference=Predictions.from_list(pre.lists_predictions.take(index)),
                          extras=r.options, max_length=r.max_length, prompt_ends=r.editor.set_prompt_ends,
                          chat_template=r.chat_template)
    if r.state.heldout is not None:   # the model-level metrics, one value for the block, repeated on its edits
        held = retention.HeldoutSet(**r.state.heldout)
        values = retention.measure(held, r.model, r.tokenizer, r.heldout, max_length=r.max_length,
                                   prompt_ends=r.editor.set_prompt_ends, pre=held.pre)
        scores.extra |= {k: np.full(len(index), np.nan if v is None else v) for k, v in values.items()}
    r.state.eval_seconds += time.perf_counter() - t0
    return scores


def eval_sample_indices(spec: RunSpec, count: int) -> np.ndarray | None:
    """Which of the first `count` edits of a block an evaluation checkpoint scores: None (all of them) up to
    `spec.eval_sample` edits, else that many, drawn from one seeded permutation of the block (its first members
    below `count`, in stream order). So the sample is fixed by the seed, and an edit sampled at a later
    checkpoint was sampled at every earlier one it had been made by."""
    if not spec.eval_sample or count <= spec.eval_sample:
        return None
    order = np.random.default_rng([spec.seed, 0x5A3D]).permutation(spec.n_edits)   # own stream: run RNGs untouched
    return np.sort(order[order < count][: spec.eval_sample])


def _curve_point(r: Run, means: dict[str, float], block: int, done: int, sample: np.ndarray | None) -> dict[str, Any]:
    return means | {"block": block, "n_edits": done, "scored": "all" if sample is None else "sample",
                    "n_scored": done if sample is None else len(sample),
                    "edit_seconds": r.state.edit_seconds, "eval_seconds": r.state.eval_seconds,
                    "rss_mb": rss_mb(), "peak_rss_mb": peak_rss_mb()}


def _describe(point: dict[str, Any]) -> str:
    """One line per evaluation checkpoint, so that a long stream shows where it stands (also with progress off)."""
    scores = " ".join(f"{k}={point[k]:.3f}" for k in ("reliability", "generalization", "locality_agreement"))
    return (f"{point['n_edits']:,} edits ({point['n_scored']:,} scored, {point['scored']}): {scores}; "
            f"edit {point['edit_seconds']:.0f} s, eval {point['eval_seconds']:.0f} s, RSS {point['rss_mb']} MB "
            f"(peak {point['peak_rss_mb']})")


def _records_at(source, index: np.ndarray):
    for i in index:
        yield from source.records(int(i), int(i) + 1)


def finish(r: Run) -> dict[str, Any]:
    """Write per_edit.csv, curve.csv, summary.json (and the edited model if asked); drop the checkpoint."""
    per_edit = pd.concat(r.state.rows, ignore_index=True)
    summary = _summary(r, per_edit)
    io.write_csv(r.out / "per_edit.csv", per_edit)
    if r.spec.eval_at:
        io.write_csv(r.out / "curve.csv", pd.DataFrame(r.state.curve))
    if r.spec.save_model is not None:
        from ..editors.artifact import save_edited

        save_edited(r.editor, r.spec.save_model)
    io.write_json(r.out / "summary.json", summary)
    r.checkpoint_path.unlink(missing_ok=True)
    return summary


def _rows(r: Run, first: int, block: int, scores: Scores) -> pd.DataFrame:
    n, pre = r.spec.n_edits, r.state.pre
    sl = slice(first, first + n)
    uids = [rec.uid for rec in r.source.records(first, first + n)]
    post = scores.columns()
    pre_columns = {f"pre_{k}": v[sl] for k, v in pre.columns().items()   # agreement with itself is 1 before editing
                   if k != "locality_agreement" and registry.base_name(k) != "locality_lists"}
    # core post, core pre, then each optional metric's post and pre columns
    ordered = {k: post[k] for k in registry.CORE} | {f"pre_{k}": pre_columns[f"pre_{k}"] for k in registry.CORE
                                                     if f"pre_{k}" in pre_columns}
    ordered |= {k: v for k, v in post.items() if k not in ordered}
    ordered |= {k: v for k, v in pre_columns.items() if k not in ordered}
    return pd.DataFrame({"block": block, "index": np.arange(first, first + n), "uid": uids, **ordered})


def _summary(r: Run, per_edit: pd.DataFrame) -> dict[str, Any]:
    spec, state = r.spec, r.state
    metrics = [c for c in per_edit.columns if registry.is_metric(c)]
    values: dict[str, Any] = {}
    for name in metrics:
        values |= registry.summarize(name, per_edit[name].to_numpy())
    for name in metrics:
        if f"pre_{name}" in per_edit:
            values |= registry.summarize(name, per_edit[f"pre_{name}"].to_numpy(), prefix="pre_")
    return {
        "model": spec.model, "family": family_of(r.model).name, "dataset": spec.dataset, "editor": spec.label,
        "n_edits": spec.n_edits, "n_blocks": spec.n_blocks, "seed": spec.seed, **values,
        "edit_seconds": round(state.edit_seconds, 3), "eval_seconds": round(state.eval_seconds, 3),
        "seconds_per_edit": round(state.edit_seconds / (spec.n_edits * spec.n_blocks), 5),
        "peak_rss_mb": peak_rss_mb(),
        "threads": torch.get_num_threads(), "deterministic": torch.are_deterministic_algorithms_enabled(),
        "generation_prompts": "chat_template" if r.chat_template else "raw",
        "prompt_lengths": prompt_lengths.report(r.source, r.prompt_lengths),
        "heldout": _heldout(r),
        "named_lists": list_report(r.source.records(0, spec.n_edits * spec.n_blocks)),
        **({"eval_sample": _sample_report(spec)} if spec.eval_sample else {}),
        "hparams": dataclasses.asdict(r.hparams),
        "editor_report": r.editor.report(),
        "metric_definitions": registry.definitions(metrics),
        "protocol": f"{spec.n_blocks} block(s) of {spec.n_edits} edits; each block starts from the unedited "
                    "model and is evaluated after its last edit",
    }


def _sample_report(spec: RunSpec) -> dict[str, Any]:
    return {"size": spec.eval_sample, "seed": spec.seed,
            "rule": "a checkpoint past `size` edits scores `size` of them: the first members below it of one "
                    "seeded permutation of the block (runner.eval_sample_indices); the final checkpoint scores "
                    "every edit (curve row scored=all, per_edit.csv, these headline metrics) and the sample"}


def _heldout(r: Run) -> dict[str, Any] | None:
    """The held-out set this run measured (sizes, the cut policy, the unedited model's values)."""
    if r.state.heldout is None:
        return None
    held = retention.HeldoutSet(**r.state.heldout)
    return held.describe() | {"pre": held.pre, "max_tokens": r.heldout.max_tokens if r.heldout else None,
                              "policy": "each held-out text is cut to its first max_tokens tokens"}
