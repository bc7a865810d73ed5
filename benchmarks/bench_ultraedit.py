"""UltraEdit speed and memory benchmark (prints its figures; not a timed test).

In one run, on one model and the same edit batches:
  (a) the editor: edits/s and seconds per turn (tokenisation, capture, normaliser, solve, apply);
  (b) the floor: one plain forward + backward over the same mini-batches, two ways:
        act   - backward of activation gradients only, down to the first edited module's output
                (the least any gradient-based editor must do);
        train - an ordinary training pass (every weight requires grad, loss.backward());
  (c) the ratio (a)/(b) (target: editor time <= 1.3x the floor);
  (d) process memory (RSS now, and the peak from getrusage) after streaming N1 and N2 edits
      through the editor (records generated on demand from lifelong.data.world.World, never all held;
      target: memory at N2 within 10% of N1).

Without --model, a testbed-size model is built (untrained: timing does not need knowledge):
d_model 128, 8 layers, d_ff 512, vocabulary 2048.

    .venv/bin/python benchmarks/bench_ultraedit.py            # 20 timed turns; memory at 10K and 100K edits
    .venv/bin/python benchmarks/bench_ultraedit.py --quick    # 5 timed turns; memory at 1K and 5K edits
"""
from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lifelong.editors import EditContext, build_hparams  # noqa: E402
from lifelong.editors.ultraedit import UltraEditor  # noqa: E402
from lifelong.models.families import FAMILIES  # noqa: E402
from lifelong.models.loading import load_model  # noqa: E402
from lifelong.models.modules import family_of, get_module  # noqa: E402
from lifelong.pipeline.testbed import TinyModelConfig, build_model, train_tokenizer  # noqa: E402
from lifelong.models.tokenization import IGNORE  # noqa: E402
from lifelong.data.world import World  # noqa: E402


def rss_mb() -> float:
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:  # Linux fallback
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * resource.getpagesize() / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def floor_pass(model, batches, first_module, mode: str) -> float:
    """One forward + backward over `batches`: 'act' (activation grads to first_module's output) or 'train'."""
    start = time.perf_counter()
    for batch in batches:
        answer = batch.labels != IGNORE
        if mode == "train":
            logits = model(**batch.model_inputs()).logits
            loss = F.cross_entropy(logits[answer], batch.labels[answer])
            loss.backward()
            continue
        held = {}

        def hook(module, args, output):
            held["out"] = output.detach().requires_grad_(True)
            return held["out"]

        handle = first_module.register_forward_hook(hook)
        try:
            with torch.enable_grad():
                logits = model(**batch.model_inputs()).logits
                loss = F.cross_entropy(logits[answer], batch.labels[answer])
                torch.autograd.grad(loss, [held["out"]])
        finally:
            handle.remove()
    return time.perf_counter() - start


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="a saved model directory (default: build a testbed-size model)")
    ap.add_argument("--family", default="llama", choices=["gpt2", "llama", "mistral"])
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--n-layers", type=int, default=8)
    ap.add_argument("--d-ff", type=int, default=512)
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--turn-size", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=10)
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="ultraedit hparam overrides")
    ap.add_argument("--turns", type=int, default=20, help="timed turns (after one warm-up turn)")
    ap.add_argument("--memory-at", default="10000,100000", help="edit counts at which memory is reported")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 avoids oversubscription on shared CPUs)")
    ap.add_argument("--quick", action="store_true", help="5 timed turns; memory at 1K and 5K edits")
    args = ap.parse_args(argv)
    if args.quick:
        args.turns, args.memory_at = 5, "1000,5000"
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    from lifelong.core.config import parse_overrides

    world = World()
    if args.model:
        model, tok = load_model(args.model)
        family = family_of(model).name
        source = args.model
    else:
        family = args.family
        tok = train_tokenizer(world, None, vocab_size=args.vocab, add_bos=family != "gpt2")
        model = build_model(TinyModelConfig(family, d_model=args.d_model, n_layers=args.n_layers, d_ff=args.d_ff), tok)
        model.eval().requires_grad_(False)
        source = f"testbed {family} d={args.d_model} L={args.n_layers} ff={args.d_ff} V={len(tok)} (untrained)"
    overrides = {"turn_size": args.turn_size, "batch_size": args.batch_size, **parse_overrides(args.set)}
    hp = build_hparams("ultraedit", {}, family, overrides)
    editor = UltraEditor(model, tok, hp, EditContext(FAMILIES[family]))
    first = get_module(model, min(editor.paths, key=lambda p: [int(x) if x.isdigit() else 0 for x in p.split(".")]))
    print(f"model: {source}; {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params; threads {args.threads}")
    print(f"edited modules ({len(editor.paths)}): {', '.join(editor.paths)}")
    print(f"turn_size {hp.turn_size}, batch_size {hp.batch_size}, lr {hp.lr}, solve {hp.solve}, "
          f"stats {editor.stats_dtype}, faithful {hp.faithful}")

    # -- (a)-(c): time per turn, editor vs floors on the same mini-batches, interleaved ------------
    next_record = 0

    def take(n):
        nonlocal next_record
        out = list(world.records(next_record, next_record + n))
        next_record += n
        return out

    editor.edit_turn(take(hp.turn_size))  # warm-up
    rows = {"editor": [], "tokenize": [], "act": [], "train": []}
    for _ in range(args.turns):
        records = take(hp.turn_size)
        t0 = time.perf_counter()
        batches = editor.minibatches(records)
        rows["tokenize"].append(time.perf_counter() - t0)
        rows["act"].append(floor_pass(model, batches, first, "act"))
        model.requires_grad_(True)
        rows["train"].append(floor_pass(model, batches, first, "train"))
        model.zero_grad(set_to_none=True)
        model.requires_grad_(False)
        t0 = time.perf_counter()
        editor.edit_turn(records)
        rows["editor"].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in rows.items()}
    print(f"\ntiming: median over {args.turns} turns of {hp.turn_size} edits ({hp.turn_size // hp.batch_size} mini-batches)")
    print(f"{'':34s}{'s/turn':>10s}{'edits/s':>10s}{'ratio':>8s}")
    print(f"{'(a) ultraedit edit_turn':34s}{med['editor']:10.4f}{hp.turn_size / med['editor']:10.1f}{'':>8s}")
    print(f"{'    of which tokenise+collate':34s}{med['tokenize']:10.4f}{'':>10s}{'':>8s}")
    for key, label in (("act", "(b) floor: fwd + activation bwd"), ("train", "(b') floor: fwd + training bwd")):
        print(f"{label:34s}{med[key]:10.4f}{hp.turn_size / med[key]:10.1f}{med['editor'] / med[key]:8.2f}")
    print(f"{'(c) ratio (a)/(b), (a)/(b)':34s}{'':>20s}{med['editor'] / med['act']:8.2f} / {med['editor'] / med['train']:.2f}")
    print(f"    editor vs floor incl. tokenisation: {med['editor'] / (med['act'] + med['tokenize']):.2f}")

    # -- (d): memory after streaming N edits ----------------------------------------------------
    if args.skip_memory:
        return
    marks = sorted(int(x) for x in args.memory_at.split(","))
    print(f"\nmemory while streaming edits (turns of {hp.turn_size}):")
    print(f"{'edits':>10s}{'rss MB':>10s}{'peak MB':>10s}{'s/turn':>10s}{'elapsed s':>11s}")
    print(f"{editor.edits_done:10d}{rss_mb():10.1f}{peak_rss_mb():10.1f}")
    results, start, last_t, last_n = {}, time.perf_counter(), time.perf_counter(), editor.edits_done
    for mark in marks:
        while editor.edits_done < mark:
            editor.edit_turn(take(min(hp.turn_size, mark - editor.edits_done)))
        now = time.perf_counter()
        per_turn = (now - last_t) / max(1, (editor.edits_done - last_n) / hp.turn_size)
        results[mark] = (rss_mb(), peak_rss_mb())
        print(f"{editor.edits_done:10d}{results[mark][0]:10.1f}{results[mark][1]:10.1f}{per_turn:10.4f}{now - start:11.1f}")
        last_t, last_n = now, editor.edits_done
    lo, hi = marks[0], marks[-1]
    growth = (results[hi][1] - results[lo][1]) / results[lo][1] * 100
    print(f"peak RSS growth {lo} -> {hi} edits: {growth:+.1f}% (target < 10%)")
    stats = next(iter(editor.stats.values()))
    print(f"normaliser rows seen (one shape): {stats.count}; all weights finite: "
          f"{all(bool(torch.isfinite(m.weight).all()) for m in editor.edited.values())}")


if __name__ == "__main__":
    main()
