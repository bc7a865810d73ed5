"""Evaluation cost on a real model: answer-position logits vs full logits, and torch threads (prints figures).

In one run, on the same model and the same ZsRE pairs (prompt, target; rephrase; locality):
  (a) before: the full forward (`model(**inputs).logits`, every position x the whole vocabulary), rows
      batched by count only (256);
  (b) after: `score_pairs` as the runner calls it (the LM head at answer positions only, batches bounded by
      padded tokens too); (a)/(b) time and the peak RSS each adds (measured in a child process each, since
      a process's peak only grows);
  (c) one forward + backward of a training batch at 1 and at 2 torch threads.

Needs the real model (`dvc repro convert@smollm2-135m`) and ../shared/data (or LIFELONG_DATA_DIR).

    .venv/bin/python benchmarks/bench_eval.py                  # 300 records (900 pairs)
    .venv/bin/python benchmarks/bench_eval.py --records 100
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lifelong.core.config import load_params  # noqa: E402
from lifelong.data import load_dataset  # noqa: E402
from lifelong.eval.teacher_forced import (score_pairs, teacher_forced_batches, token_accuracy)  # noqa: E402
from lifelong.models.loading import load_model, resolve_model  # noqa: E402


def _pairs(params, n: int) -> list[tuple[str, str]]:
    records = list(load_dataset("zsre", params).records(0, n))
    return ([(r.prompt, r.target) for r in records] + [(r.rephrase, r.target) for r in records if r.rephrase]
            + [(r.locality_prompt, r.locality_answer) for r in records if r.locality_prompt])


@torch.no_grad()
def _full_logits(model, tokenizer, pairs) -> float:
    """The previous scorer: every position's logits, 256 rows per batch."""
    total = 0.0
    for _, batch in teacher_forced_batches(model, tokenizer, pairs, batch_size=256, max_tokens=1 << 40):
        total += float(token_accuracy(model(**batch.model_inputs()).logits, batch.labels).sum())
    return total / len(pairs)


def _answer_only(model, tokenizer, pairs) -> float:
    return float(score_pairs(model, tokenizer, pairs, batch_size=256).accuracy.mean())


def _child(kind: str, model_name: str, n: int, queue) -> None:
    torch.set_num_threads(1)
    params = load_params()
    path, dtype = resolve_model(model_name, params)
    model, tokenizer = load_model(path, dtype=dtype)
    pairs = _pairs(params, n)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    mean = (_full_logits if kind == "full" else _answer_only)(model, tokenizer, pairs)
    queue.put({"kind": kind, "seconds": time.perf_counter() - start, "accuracy": mean, "pairs": len(pairs),
               "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "rss_before_mb": base})


def _measure(kind: str, model_name: str, n: int) -> dict:
    queue = mp.get_context("spawn").Queue()
    proc = mp.get_context("spawn").Process(target=_child, args=(kind, model_name, n, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def _threads(model_name: str, repeats: int = 3) -> dict[int, float]:
    params = load_params()
    path, dtype = resolve_model(model_name, params)
    model, tokenizer = load_model(path, dtype=dtype)
    pairs = _pairs(params, 8)[:16]
    _, batch = next(iter(teacher_forced_batches(model, tokenizer, pairs, batch_size=16)))
    model.requires_grad_(True)
    times = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            loss = model(**batch.model_inputs(), labels=batch.labels).loss
            loss.backward()
            best = min(best, time.perf_counter() - start)
            model.zero_grad(set_to_none=True)
        times[threads] = best
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--records", type=int, default=300)
    args = ap.parse_args()
    full = _measure("full", args.model, args.records)
    answer = _measure("answer", args.model, args.records)
    print(f"scoring {full['pairs']} ZsRE pairs on {args.model} (1 thread):")
    for r in (full, answer):
        print(f"  {r['kind']:>6} logits: {r['seconds']:7.1f} s, accuracy {r['accuracy']:.4f}, "
              f"peak RSS {r['peak_rss_mb']:7.0f} MB (model loaded: {r['rss_before_mb']:.0f} MB)")
    print(f"  time ratio full/answer-only: {full['seconds'] / answer['seconds']:.2f}x; extra peak memory "
          f"{full['peak_rss_mb'] - full['rss_before_mb']:.0f} MB -> {answer['peak_rss_mb'] - answer['rss_before_mb']:.0f} MB")
    times = _threads(args.model)
    print(f"one forward+backward, 16 pairs: 1 thread {times[1]:.2f} s, 2 threads {times[2]:.2f} s "
          f"(ratio {times[1] / times[2]:.2f})")
    print(json.dumps({"full": full, "answer": answer, "threads": times}))


if __name__ == "__main__":
    main()
