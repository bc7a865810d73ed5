"""WISE editing speed: the prefix-cached inner loop against the full-forward loop (the reference's).

    .venv/bin/python benchmarks/bench_wise.py [--edits 4] [--n-iter 20] [--threads 1] [--families gpt2 llama mistral]

Prints three tables:
  1. measured seconds per edit on testbed-size models (lifelong.pipeline.testbed defaults: d=128, 8 layers,
     d_ff=512, vocab 2048, random weights — timing does not need pretrained ones), side memory at
     3/4 depth (layer 6), early stop disabled so both loops run exactly n_iter steps, templates
     generated before timing; with the share of each edit spent in the inner loop;
  2. the same edits' FLOP model on the testbed shape, to compare with the measured ratio;
  3. projected FLOPs per edit on the LLaMA-2-7B shape (d=4096, d_ff=11008, 32 layers, vocab 32000,
     side memory at layer 27, 12 rows × 30 tokens, 3 target tokens per in-scope row, n_iter 70).

FLOP model (matmuls only, 2 FLOPs per multiply-add; norms, activations and softmax ignored):
  layer forward per token = 2·(4·d² + 3·d·d_ff) + 4·S·d (attention scores and mixing);
  backward from the loss to the side memory = input gradients of everything above it (≈ 1× its
  forward) + the side weight gradient (2·d·d_ff per token); frozen weights get no gradient.
  full loop, per step:   forward of all layers on all tokens, the extra main-memory matmul, lm_head on
                         all tokens; backward through the layers above, the lm_head on all tokens.
  cached loop, per step: side matmul + layers above (in-scope rows only) + lm_head on the target
                         positions only; backward likewise; plus, once per edit, a recording pass of all
                         layers without lm_head.
Not a test: run it by hand (numbers depend on the machine and its load).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lifelong.editors.base import EditContext  # noqa: E402
from lifelong.editors.wise import WiseEditor, WiseHparams  # noqa: E402
from lifelong.models.modules import family_of  # noqa: E402
from lifelong.pipeline.testbed import TinyModelConfig, build_model, train_tokenizer  # noqa: E402
from lifelong.data.world import World  # noqa: E402


def step_flops(d: int, d_ff: int, n_layers: int, layer: int, vocab: int, rows: int, seq: int, n_pred: int,
               cached: bool) -> float:
    tokens = rows * seq
    per_layer = 2 * (4 * d * d + 3 * d * d_ff) + 4 * seq * d
    above = n_layers - 1 - layer
    side = 2 * d * d_ff                      # one pass of the side (or main) memory, per token
    if cached:  # the irrelevant row stops at the side memory (its Δ is all the loss reads of it)
        upper_tokens = (rows - 1) * seq
        fwd = tokens * side + upper_tokens * above * per_layer + n_pred * 2 * d * vocab
        bwd = upper_tokens * above * per_layer + tokens * side + n_pred * 2 * d * vocab
    else:
        fwd = tokens * (n_layers * per_layer + side) + tokens * 2 * d * vocab
        bwd = tokens * (above * per_layer + side) + tokens * 2 * d * vocab
    return float(fwd + bwd)


def edit_flops(d, d_ff, n_layers, layer, vocab, rows, seq, n_pred, n_iter, cached) -> float:
    total = n_iter * step_flops(d, d_ff, n_layers, layer, vocab, rows, seq, n_pred, cached)
    if cached:  # the recording pass: every layer, no lm_head, plus the main memory once
        total += rows * seq * (n_layers * (2 * (4 * d * d + 3 * d * d_ff) + 4 * seq * d) + 2 * d * d_ff)
    return total


def measure(family: str, tokenizer, world: World, cache: bool, n_edits: int, n_iter: int) -> dict[str, float]:
    cfg = TinyModelConfig(family)                               # d=128, 8 layers, d_ff=512
    model = build_model(cfg, tokenizer, seed=0).eval().requires_grad_(False)
    hp = WiseHparams(layer=6, n_iter=n_iter, prefix_cache=cache, early_stop_loss=-1.0)
    ctx = EditContext(family=family_of(model), locality_pool=world.locality_pool(), seed=0)
    editor = WiseEditor(model, tokenizer, hp, ctx)
    records = list(world.records(0, n_edits + 1))
    editor.edit_turn(records[:1])                               # warm-up; generates the templates
    per_edit, cpu, inner, total = [], [], 0.0, 0.0
    for record in records[1:]:
        before = dict(editor.timing)
        t, c = time.perf_counter(), time.process_time()
        editor.edit_turn([record])
        per_edit.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        inner += editor.timing["inner"] - before["inner"]
        total += editor.timing["edit"] - before["edit"]
    return {"s_per_edit": statistics.median(per_edit), "cpu_per_edit": statistics.median(cpu),
            "inner_share": inner / total if total else float("nan")}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--edits", type=int, default=4)
    ap.add_argument("--n-iter", type=int, default=70)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--families", nargs="+", default=["gpt2", "llama", "mistral"])
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    world = World()
    tokenizers = {bos: train_tokenizer(world, None, vocab_size=2048, add_bos=bos) for bos in (False, True)}

    print(f"\n1. measured, testbed shape (d=128, 8 layers, d_ff=512, vocab 2048), side memory at layer 6, "
          f"n_iter={args.n_iter}, {args.edits} timed edits, torch threads={args.threads}")
    print("   (wall = median wall-clock seconds per edit; cpu = median process CPU seconds, less sensitive to load)")
    print(f"{'family':<8} {'full wall':>10} {'cached wall':>12} {'speed-up':>9} {'full cpu':>9} {'cached cpu':>11} "
          f"{'speed-up':>9} {'inner share full':>17} {'inner share cached':>19}")
    for family in args.families:
        tok = tokenizers[family != "gpt2"]
        full = measure(family, tok, world, False, args.edits, args.n_iter)
        fast = measure(family, tok, world, True, args.edits, args.n_iter)
        wall, cpu = full["s_per_edit"] / fast["s_per_edit"], full["cpu_per_edit"] / fast["cpu_per_edit"]
        print(f"{family:<8} {full['s_per_edit']:>10.3f} {fast['s_per_edit']:>12.3f} {wall:>8.2f}x "
              f"{full['cpu_per_edit']:>9.3f} {fast['cpu_per_edit']:>11.3f} {cpu:>8.2f}x "
              f"{full['inner_share']:>17.1%} {fast['inner_share']:>19.1%}")

    print("\n2. FLOP model (testbed: 12 rows x 20 tokens; 7B: 12 rows x 30 tokens; 3 target tokens per in-scope row)")
    shapes = {"testbed": (128, 512, 8, 6, 2048, 12, 20, 33, args.n_iter),
              "LLaMA-2-7B": (4096, 11008, 32, 27, 32000, 12, 30, 33, 70)}
    print(f"{'shape':<11} {'n_iter':>6} {'full GFLOP/edit':>16} {'cached GFLOP/edit':>18} {'ratio':>7}")
    for name, shape in shapes.items():
        full = edit_flops(*shape, cached=False) / 1e9
        fast = edit_flops(*shape, cached=True) / 1e9
        print(f"{name:<11} {shape[-1]:>6} {full:>16.1f} {fast:>18.1f} {full / fast:>6.2f}x")
    d, d_ff, n, layer, vocab, rows, seq, n_pred, n_iter = shapes["LLaMA-2-7B"]
    print(f"\n3. LLaMA-2-7B per step: full {step_flops(d, d_ff, n, layer, vocab, rows, seq, n_pred, False) / 1e12:.2f} "
          f"TFLOP, cached {step_flops(d, d_ff, n, layer, vocab, rows, seq, n_pred, True) / 1e12:.2f} TFLOP; "
          f"at ~50 TFLOP/s fp32 a 70-step edit takes "
          f"{edit_flops(*shapes['LLaMA-2-7B'], cached=False) / 50e12:.1f} s (full) vs "
          f"{edit_flops(*shapes['LLaMA-2-7B'], cached=True) / 50e12:.1f} s (cached)")


if __name__ == "__main__":
    main()
