"""Command line: `python -m lifelong run ...` runs one experiment; `load` brings back a saved edited model;
`list` shows the registries; `cells` prints one shell command per grid cell, for any engine (xargs, SLURM, ...);
`profile` runs or applies a set of params overrides (params-gpu.yaml).

Errors caused by input (unknown names, bad params, malformed data) print one line and exit 2; an error of the
machine (a full disk, an unwritable folder) prints one line and exits 1. Results are written atomically, so what an
earlier run left in --out survives either. Two runs on one --out: the second is refused (a lock file).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

from .core.errors import LifelongError


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(float(x)) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lifelong", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run one editing experiment and write summary.json / per_edit.csv")
    run.add_argument("--model", required=True, help="a name under `models:` in params.yaml")
    run.add_argument("--dataset", required=True, help="a name under `datasets:` in params.yaml")
    run.add_argument("--editor", required=True, help="ft, ultraedit, wise, ...")
    run.add_argument("--n-edits", type=int, required=True, help="edits per block (T)")
    run.add_argument("--out", type=Path, required=True, help="output directory")
    run.add_argument("--blocks", type=int, default=1, help="independent blocks of n-edits, rolled back in between")
    run.add_argument("--eval-at", type=_int_list, default=(), help="extra evaluation checkpoints, e.g. 1000,10000")
    run.add_argument("--eval-sample", type=int, default=0, metavar="S",
                     help="at an --eval-at checkpoint past S edits, score a fixed seeded sample of S of them "
                          "(the last checkpoint also scores every edit); 0: score every edit")
    run.add_argument("--checkpoint-every", type=int, default=0, help="write a resumable checkpoint every K turns")
    run.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt if present")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override an editor hyperparameter (YAML value), repeatable")
    run.add_argument("--params", type=Path, default=None, help="params file (default: the repo's params.yaml)")
    run.add_argument("--device", default=None,
                     help="auto, cpu, cuda or cuda:K (default: params.yaml runtime.device; auto picks the GPU "
                          "when torch sees one); a cuda device without a GPU is an error")
    run.add_argument("--eval-batch-size", type=int, default=256)
    run.add_argument("--threads", type=int, default=None,
                     help="torch CPU threads (default: params.yaml runtime.threads; 0: torch's default)")
    run.add_argument("--no-progress", action="store_true")
    run.add_argument("--save-model", type=Path, default=None, metavar="DIR",
                     help="save the edited model (save_pretrained) and the editor's state to DIR")

    load = sub.add_parser("load", help="load an edited model saved with --save-model and describe it")
    load.add_argument("directory", type=Path)
    load.add_argument("--prompt", action="append", default=[], help="greedy-complete this prompt (repeatable)")
    load.add_argument("--max-new-tokens", type=int, default=8)

    sub.add_parser("list", help="list registered models, datasets and editors")

    cells = sub.add_parser("cells", help="print the DVC stage command of every cell of a grid section, one a line, "
                                         "for any engine (xargs -P, GNU parallel, a SLURM array)")
    cells.add_argument("--grid", default="grid", metavar="SECTION",
                       help="the params.yaml grid section: grid (default), real_grid, grid_t1000, ...")
    cells.add_argument("--format", dest="fmt", choices=("shell", "json", "slurm"), default="shell",
                       help="shell: one command a line; json: stage, model, dataset, editor, command, out_dir per cell; "
                            "slurm: an array job script for sbatch")
    cells.add_argument("--params", type=Path, default=None,
                       help="params file that lists the cells (default: the repo's params.yaml); the commands run "
                            "from its folder and read the params.yaml there")
    cells.add_argument("--cpus-per-task", type=int, default=4, help="slurm: CPUs per cell (default 4)")
    cells.add_argument("--gpus-per-task", type=int, default=0, help="slurm: GPUs per cell (default 0: no GPU line)")

    profile = sub.add_parser("profile", help="a profile of params.yaml overrides (params-gpu.yaml: the papers' GPU "
                                             "grid): print the `dvc exp run -S ...` that runs it, or --apply it")
    profile.add_argument("file", type=Path, help="the profile, e.g. params-gpu.yaml")
    profile.add_argument("--apply", action="store_true",
                         help="write the overrides into params.yaml (DVC's own override function); undo with git")
    profile.add_argument("--name", default=None, help="the experiment's name (default: the file's stem)")
    profile.add_argument("--params", type=Path, default=None, help="params file (default: the repo's params.yaml)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "load":
            return _load(args)
        if args.command == "list":
            return _list()
        if args.command == "cells":
            return _cells(args)
        if args.command == "profile":
            return _profile(args)
    except LifelongError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:      # the machine, not the input: a full disk, a folder that cannot be written
        where = f": {exc.filename}" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{where} (errno {exc.errno}); the files already in the output folder are "
              "intact (results are written to a temporary file, then moved into place)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; rerun with --resume to continue from the last checkpoint", file=sys.stderr)
        return 130
    return 0


@contextlib.contextmanager
def exclusive(out: Path):
    """Hold OUT/.lock (filelock) for the length of a run: a second run on the same folder is refused at once,
    naming the PID of the one that holds it (written beside the lock)."""
    import filelock

    out.mkdir(parents=True, exist_ok=True)
    lock, owner = filelock.FileLock(str(out / ".lock"), timeout=0), out / ".lock.pid"
    try:
        lock.acquire()
    except filelock.Timeout:
        pid = owner.read_text().strip() if owner.exists() else "unknown"
        raise LifelongError(f"{out} is in use by another run (PID {pid}): wait for it to finish, or choose another "
                            "--out") from None
    try:
        owner.write_text(str(os.getpid()))
        yield
    finally:
        owner.unlink(missing_ok=True)
        lock.release()


def _run(args) -> int:
    from .core.config import parse_overrides
    from .core.paths import PARAMS
    from .eval.registry import HEADLINE
    from .pipeline.runner import RunSpec, run

    spec = RunSpec(model=args.model, dataset=args.dataset, editor=args.editor, n_edits=args.n_edits,
                   out_dir=args.out, overrides=parse_overrides(args.overrides), n_blocks=args.blocks,
                   eval_at=args.eval_at, checkpoint_every=args.checkpoint_every, resume=args.resume,
                   seed=args.seed, params_path=args.params or PARAMS, eval_batch_size=args.eval_batch_size,
                   device=args.device, progress=not args.no_progress, save_model=args.save_model,
                   threads=args.threads, eval_sample=args.eval_sample)
    with exclusive(args.out):
        summary = run(spec)
    keys = [k for m in HEADLINE for k in (f"pre_{m}", m)] + ["edit_seconds", "eval_seconds"]
    print(" ".join(f"{k}={summary[k]:.4g}" if isinstance(summary[k], float) else f"{k}={summary[k]}" for k in keys))
    print(f"wrote {args.out}/summary.json" + (f"; the edited model is in {args.save_model}" if args.save_model else ""))
    return 0


def _load(args) -> int:
    from .editors.artifact import load_edited
    from .eval.generation import greedy_generate

    editor = load_edited(args.directory)
    print(f"{editor.name} editor, {editor.edits_done} edit(s), on {editor.model.config.model_type} "
          f"({', '.join(editor.modules())})")
    if args.prompt:
        outputs = greedy_generate(editor.model, editor.tokenizer, args.prompt, [args.max_new_tokens] * len(args.prompt),
                                  prompt_ends=editor.set_prompt_ends)
        for prompt, ids in zip(args.prompt, outputs):
            print(f"{prompt!r} -> {editor.tokenizer.decode(ids, skip_special_tokens=True)!r}")
    return 0


def _list() -> int:
    from .core.config import load_params
    from .data import LOADERS
    from .editors import EDITORS
    from .eval.registry import METRICS

    params = load_params()
    print("editors: ", ", ".join(sorted(EDITORS)))
    print("loaders: ", ", ".join(sorted(LOADERS)))
    print("datasets:", ", ".join(sorted(params.get("datasets") or {})))
    print("models:  ", ", ".join(sorted(params.get("models") or {})))
    print("metrics: ", ", ".join(f"{m.name} ({m.direction} is better)" for m in METRICS.values()))
    return 0


def _cells(args) -> int:
    from .pipeline.cells import render

    sys.stdout.write(render(args.grid, args.fmt, args.params, cpus_per_task=args.cpus_per_task,
                            gpus_per_task=args.gpus_per_task))
    return 0


def _profile(args) -> int:
    from .core.config import load_params
    from .core.paths import PARAMS
    from .pipeline import profile

    params_path = args.params or PARAMS
    if args.apply:
        applied = profile.apply(args.file, params_path)
        print(f"applied {len(applied)} override(s) of {args.file} to {params_path}; `git diff {params_path.name}` "
              f"shows them, `dvc repro` runs them, `git checkout {params_path.name}` undoes them")
        return 0
    print(profile.command(args.file, load_params(params_path), args.name or args.file.stem))
    return 0
