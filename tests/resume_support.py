"""The child process of tests/test_resume.py: one run, with named points at which it can SIGKILL itself.

    python tests/resume_support.py '{"editor": ..., "params": ..., "out": ..., "kill": [...], "trace": ...}'

A *point* is where a real crash could land, named by its place in the run (not by a counter, so a resumed
process names the same point the same way):

    ["edit", block, turn]              inside the editor's turn (after its checkpoint, before the next)
    ["eval", block, n]                 at the start of an evaluation of the block's first n edits
    ["checkpoint-write", block, turn]  the checkpoint's temporary file written, not yet moved into place
    ["after-checkpoint", block, turn]  the checkpoint in place
    ["results", file, 0]               a result file's temporary written, not yet moved into place

`kill` SIGKILLs the process at that point (exactly what `kill -9` does: no handler, no cleanup). `trace`
writes the points the run passed, in order, to a JSON file.
"""
from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

SPEC = dict(model="t-llama", dataset="world", n_edits=3, n_blocks=2, eval_at=(2,), checkpoint_every=1, seed=0,
            threads=1)
RESULTS = ("per_edit.csv", "curve.csv", "summary.json")
# Small settings that make each editor edit the tiny model in a few seconds (turn_size 1: one edit per turn).
OVERRIDES = {"ft_l": {"norm_constraint": 0.05, "lr": 0.01}, "ultraedit": {"turn_size": 1, "layers": [-2], "lr": 2e-3},
             "wise": {"n_iter": 4, "layer": 2, "template_lengths": [2]}, "grace": {"layer": 2, "eps": 8.0, "n_iter": 5},
             "memit": {"layers": [0, 1], "v_num_grad_steps": 4, "mom2_update_weight": 100.0},
             "alphaedit": {"turn_size": 1, "layers": [0, 1], "v_num_grad_steps": 4, "L2": 0.5,
                           "nullspace_threshold": 0.1}}


def main(args: dict) -> None:
    from lifelong.editors import editor_class
    from lifelong.pipeline import checkpoint, runner

    kill, passed, here = args.get("kill"), [], {}
    if args.get("artifacts"):
        runner.ARTIFACTS = Path(args["artifacts"])

    def point(*name) -> None:
        passed.append(list(name))
        if list(name) == kill:
            os.kill(os.getpid(), signal.SIGKILL)

    def wrap(owner, attribute: str, before):
        original = getattr(owner, attribute)

        def wrapped(*a, **kw):
            before(*a, **kw)
            return original(*a, **kw)
        setattr(owner, attribute, wrapped)

    def entering_block(r, block, *_a, **_kw):
        here.update(run=r, block=block)

    def saving_checkpoint(_path, _identity, _editor, state):
        here["saving"] = (state.block, state.turn)

    def replacing(_src, dst):
        name = Path(dst).name
        if name == "checkpoint.pt":
            point("checkpoint-write", *here.pop("saving"))
        elif name in RESULTS:
            point("results", name, 0)

    wrap(runner, "edit_block", entering_block)
    wrap(runner, "evaluate", lambda r, first, count, *_: point("eval", first // r.spec.n_edits, count))
    wrap(editor_class(args["editor"]), "edit_turn", lambda *_: point("edit", here["block"], here["run"].state.turn))
    wrap(checkpoint, "save", saving_checkpoint)
    wrap(os, "replace", replacing)
    spec = runner.RunSpec(editor=args["editor"], out_dir=Path(args["out"]), params_path=Path(args["params"]),
                          overrides=args.get("overrides") or {}, resume=bool(args.get("resume")), progress=False,
                          **SPEC)
    try:
        runner.run(spec, on_checkpoint=lambda block, turn: point("after-checkpoint", block, turn))
    finally:
        if args.get("trace"):
            Path(args["trace"]).write_text(json.dumps(passed))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
