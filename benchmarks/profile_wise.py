"""Where one WISE edit spends its time on a real model (prints a profile; not a test).

One warm-up edit (templates, pool), then one edit under cProfile, then the time split into the parts a reader
can act on: the inner loop's forward (prefix-cached: only the layers above the side memory, the LM head only at
answer positions) and backward, the once-per-edit recording pass, and everything else.

    .venv/bin/python benchmarks/profile_wise.py                       # smollm2-135m, ZsRE, params.yaml settings
    .venv/bin/python benchmarks/profile_wise.py --model tiny-llama --dataset world --threads 1
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lifelong.core.config import load_params  # noqa: E402
from lifelong.core.paths import ARTIFACTS  # noqa: E402
from lifelong.data import load_dataset, locality_pool  # noqa: E402
from lifelong.editors import EditContext, build_hparams, editor_class  # noqa: E402
from lifelong.models.loading import fingerprint, load_model, resolve_model  # noqa: E402
from lifelong.models.modules import family_of  # noqa: E402

# (label, the profiled function whose cumulative time it is): file suffix and function name
PARTS = (("inner loop: forward (layers above the memory, LM head at answers)", "wise/cache.py", "run"),
         ("inner loop: backward", "autograd/__init__.py", "backward"),
         ("recording pass (once per edit)", "wise/cache.py", "record"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--dataset", default="zsre")
    ap.add_argument("--threads", type=int, default=0, help="0: torch's default")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    params = load_params()
    path, dtype = resolve_model(args.model, params)
    model, tokenizer = load_model(path, dtype=dtype)
    family = family_of(model)
    hparams = build_hparams("wise", params, family.name, {}, model=args.model)
    source = load_dataset(args.dataset, params)
    context = EditContext(family=family, device=torch.device("cpu"), seed=0,
                          locality_pool=locality_pool(args.dataset, params, source),
                          model_fingerprint=fingerprint(model), stats_dir=ARTIFACTS / "stats" / args.model)
    editor = editor_class("wise")(model, tokenizer, hparams, context)
    first, second = source.records(0, 2)
    editor.edit_turn([first])                      # warm-up: context templates, the irrelevant pool
    profile = cProfile.Profile()
    start = time.perf_counter()
    profile.enable()
    editor.edit_turn([second])
    profile.disable()
    total = time.perf_counter() - start
    stats = pstats.Stats(profile).stats          # (file, line, name) -> (calls, primitive, tottime, cumtime, callers)
    print(f"one WISE edit on {args.model} ({args.dataset}), {hparams.n_iter} steps, layer {editor.layer_index}, "
          f"{torch.get_num_threads()} thread(s): {total:.2f} s")
    accounted = 0.0
    for label, suffix, name in PARTS:
        seconds = sum(v[3] for (file, _, fn), v in stats.items() if file.endswith(suffix) and fn == name)
        calls = sum(v[0] for (file, _, fn), v in stats.items() if file.endswith(suffix) and fn == name)
        accounted += seconds
        print(f"  {label:<68} {seconds:6.2f} s  {100 * seconds / total:5.1f}%  ({calls} calls)")
    print(f"  {'everything else':<68} {total - accounted:6.2f} s  {100 * (total - accounted) / total:5.1f}%")


if __name__ == "__main__":
    main()
