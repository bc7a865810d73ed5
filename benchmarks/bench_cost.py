"""Cost of every editor, per edit, on model shapes up to a real 7B layer (issue 15, part 3).

For each shape and each registered editor (ft, ft_l, ultraedit, wise, grace, memit, alphaedit), on the same
synthetic edits (a World prompt that holds its subject, and a one-to-three-word target):
  * s/edit    time inside `edit_turn` only, over `--edits` edits in turns of min(turn_size, edits); one
              single-edit turn runs first and is reported apart (`first s`: templates, statistics loading,
              AlphaEdit's SVD and allocator warm-up are paid there, once per editor);
  * x floor   s/edit over the floor: one forward + activation backward (from the loss down to the embedding
              output, no weight gradients) per edit, over the same prompt + target tokens. Read it as "this
              editor costs N plain passes per edit"; a batched editor (UltraEdit) can go below 1;
  * peak MB   growth while the editor is built and edits. CPU: peak RSS from getrusage, reset before each editor
              (/proc/self/clear_refs, where Linux allows it); GPU: torch.cuda.max_memory_allocated;
  * stats s   MEMIT and AlphaEdit read layer statistics E[k kᵀ]. They are written for the random model into a
              temporary stats folder from a small World corpus (cost does not depend on what the weights learned);
              the time is a one-off per shape, shared by both rows, never counted per edit.

Shapes (random weights, nothing downloaded; the World tokenizer, vocabulary 2048, serves every shape: its ids fit
any vocabulary, but a real tokenizer cuts the same text into somewhat more tokens):
  testbed            params.yaml testbed.tiny-llama (d 128, 6 layers), fp32 on CPU; layers as models.tiny-llama
  llama-2-7b-layer   the exact LLaMA-2-7B configuration with num_hidden_layers=1 (~460M parameters, fp32 on CPU);
                     every editor targets layer 0 (UltraEdit: its family preset's projections at layer 0)
  gpt-j-6b, llama-2-7b, llama-3-8b, mistral-7b
                     the full published configurations in bf16 on the GPU, family defaults of params.yaml.
                     Offered only when torch.cuda.is_available(). This path is UNTESTED (written on a CPU machine).
Hyperparameters: params.yaml `editors:` (build_hparams, model=None) plus the layer placement above, iteration counts
at the editors' defaults (--quick: at most 2). An editor that fails on a shape is a row with its error, not a crash.

    .venv/bin/python benchmarks/bench_cost.py                       # 20 edits per editor on every shape
    .venv/bin/python benchmarks/bench_cost.py --quick --shapes testbed
    .venv/bin/python benchmarks/bench_cost.py --editors ft,ultraedit --shapes llama-2-7b-layer
"""
from __future__ import annotations

import argparse
import ctypes
import dataclasses
import gc
import resource
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_ultraedit import floor_pass as ultraedit_floor  # noqa: E402  (this folder)
from lifelong.core import io  # noqa: E402
from lifelong.core.config import load_params  # noqa: E402
from lifelong.core.machine import hardware  # noqa: E402
from lifelong.editors import EDITORS, EditContext, build_hparams, editor_class  # noqa: E402
from lifelong.editors.common.covariance import write_layer_stats  # noqa: E402
from lifelong.editors.common.mass_edit import MassEditor  # noqa: E402
from lifelong.editors.ultraedit.presets import PRESETS  # noqa: E402
from lifelong.models.families import FAMILIES  # noqa: E402
from lifelong.models.loading import fingerprint  # noqa: E402
from lifelong.models.modules import layer_path  # noqa: E402
from lifelong.models.tokenization import encode_batch  # noqa: E402
from lifelong.pipeline.testbed import TinyModelConfig, build_model, train_tokenizer, world_from_params  # noqa: E402

QUICK_ITERS = 2                                     # --quick: at most this many optimisation steps
ITER_KEYS = ("n_iter", "v_num_grad_steps")          # what "iteration count" is called in the editors' hparams
PLACEMENT_KEYS = ("layer", "layers", "module", "preset", "projections", "v_loss_layer")


@dataclass(frozen=True)
class Shape:
    name: str
    family: str
    config: dict = field(default_factory=dict)      # transformers config kwargs; empty: the testbed
    gpu: bool = False                               # full model: bf16 on the GPU


# The published configurations (each model's config.json on the hub), written out so nothing is downloaded.
LLAMA2 = dict(num_hidden_layers=32, hidden_size=4096, intermediate_size=11008, num_attention_heads=32,
              num_key_value_heads=32, vocab_size=32000, rope_theta=10000.0, rms_norm_eps=1e-5,
              max_position_embeddings=4096, tie_word_embeddings=False)
SHAPES = {s.name: s for s in (
    Shape("testbed", "llama"),
    Shape("llama-2-7b-layer", "llama", {**LLAMA2, "num_hidden_layers": 1}),
    # GPT-J's rotary base is fixed at 10000 in its code (no rope_theta in its config)
    Shape("gpt-j-6b", "gptj", dict(n_layer=28, n_embd=4096, n_inner=16384, n_head=16, rotary_dim=64,
                                   vocab_size=50400, n_positions=2048), gpu=True),
    Shape("llama-2-7b", "llama", LLAMA2, gpu=True),
    Shape("llama-3-8b", "llama", {**LLAMA2, "intermediate_size": 14336, "num_key_value_heads": 8,
                                  "vocab_size": 128256, "rope_theta": 500000.0, "max_position_embeddings": 8192},
          gpu=True),
    Shape("mistral-7b", "mistral", {**LLAMA2, "intermediate_size": 14336, "num_key_value_heads": 8,
                                    "vocab_size": 32768, "rope_theta": 1000000.0, "max_position_embeddings": 32768,
                                    "sliding_window": None}, gpu=True),  # v0.3
)}


# -- measuring -------------------------------------------------------------------------------------
def clock(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)   # kernels are asynchronous: time what ran, not what was queued
    return time.perf_counter()


def peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def reset_peak(device: torch.device) -> float:
    """Start a fresh peak; returns the base (MB) the next peak is measured from."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device) / 2**20
    try:  # Linux: "5" sets the peak RSS (VmHWM, what getrusage reports) back to the current RSS
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # the base is then the process's peak so far: only growth beyond it shows
    return peak_mb(device)


def release(device: torch.device) -> None:
    """Give freed memory back, so the next editor's peak starts from what the model itself holds."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)   # glibc keeps freed heap pages resident otherwise
    except (OSError, AttributeError):
        pass


def floor_pass(model, tokenizer, record, device: torch.device) -> None:
    """One forward + backward of the loss down to the embedding output: every layer's activation gradients,
    no weight gradients (the least a gradient-based edit of the lowest layer must do); bench_ultraedit's floor."""
    batch = encode_batch(tokenizer, [(record.prompt, record.target)]).to(device)
    ultraedit_floor(model, [batch], model.get_input_embeddings(), "act")


# -- shapes, edits, hyperparameters ------------------------------------------------------------------
def build_shape(shape: Shape, params: dict, tokenizer):
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    if not shape.config:
        model = build_model(TinyModelConfig(**params["testbed"]["tiny-llama"]), tokenizer)
        device = torch.device("cpu")
    else:
        device = torch.device("cuda" if shape.gpu else "cpu")
        config = AutoConfig.for_model(shape.family, **shape.config, bos_token_id=tokenizer.bos_token_id,
                                      eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        with device:   # initialise on the device: a 7B model never passes through CPU memory
            model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16 if shape.gpu else torch.float32)
    return model.eval().requires_grad_(False), device


def edit_records(world, n: int) -> list:
    """World records (the subject is in the prompt, as MEMIT needs), targets of one to three words."""
    return [dataclasses.replace(r, target=" ".join([r.target, r.ground_truth, r.locality_answer][: 1 + i % 3]))
            for i, r in enumerate(world.records(0, n))]


def hparams_for(name: str, shape: Shape, params: dict, edits: int, quick: bool):
    hp = build_hparams(name, params, shape.family, {})
    if not shape.config:    # the testbed: where the project itself edits tiny-llama (layers only, not lr or steps)
        tiny = ((params["models"].get("tiny-llama") or {}).get("hparams") or {}).get(name) or {}
        over = {k: v for k, v in tiny.items() if k in PLACEMENT_KEYS}
    elif shape.config.get("num_hidden_layers") == 1:    # the one 7B layer: everything at layer 0
        over = {k: v for k, v in (("layer", 0), ("module", None), ("layers", [0]), ("v_loss_layer", None))
                if hasattr(hp, k)}
        if getattr(hp, "preset", None):   # UltraEdit's family preset: its projections, at the one layer
            over |= {"preset": None, "projections": [role for role, _ in PRESETS[hp.preset][2]]}
    else:
        over = {}
    over["turn_size"] = min(hp.turn_size, edits)
    if quick:
        over |= {k: min(getattr(hp, k), QUICK_ITERS) for k in ITER_KEYS if hasattr(hp, k)}
    return build_hparams(name, params, shape.family, over)


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


# -- one editor on one shape ----------------------------------------------------------------------------
def bench_editor(name, hp, model, tokenizer, context, records, device) -> dict:
    release(device)   # what the previous editor left is freed before the base is read
    base = reset_peak(device)
    editor = editor_class(name)(model, tokenizer, hp, context)
    try:
        t0 = clock(device)
        editor.edit_turn(records[:1])                       # one-off setup is paid here
        first = clock(device) - t0
        timed, turns = records[1:], 0
        t0 = clock(device)
        for start in range(0, len(timed), hp.turn_size):
            editor.edit_turn(timed[start:start + hp.turn_size])
            turns += 1
        seconds = clock(device) - t0
        peak = max(0.0, peak_mb(device) - base)
    finally:
        editor.reset()   # the next editor starts from the unedited model, with no adapter installed
    return {"edits": len(timed), "turn_size": hp.turn_size, "s_per_edit": seconds / len(timed),
            "s_per_turn": seconds / turns, "peak_mb": peak, "first_s": first}


def write_stats(model, tokenizer, hps: dict, world, texts: int, folder: Path) -> tuple[float, str]:
    """E[k kᵀ] of every down projection MEMIT / AlphaEdit edit here, into `folder`; (seconds, description)."""
    paths = sorted({layer_path(model, layer) for hp in hps.values() for layer in hp.layers})
    corpus = world.pretraining_sentences()
    corpus = corpus[:: max(1, len(corpus) // texts)][:texts]   # spread over subjects and relations
    t0 = time.perf_counter()
    meta = write_layer_stats(model, tokenizer, paths, corpus, folder, corpus="world sentences (bench_cost)")
    tokens = next(iter(meta.values()))["tokens"]
    return time.perf_counter() - t0, f"{len(paths)} module(s), {len(corpus)} texts, {tokens} tokens"


def bench_shape(shape: Shape, names: list[str], params, world, tokenizer, args, tmp: Path) -> list[dict]:
    model, device = build_shape(shape, params, tokenizer)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"\n== {shape.name}: {n_params / 1e6:.1f}M parameters, {next(model.parameters()).dtype}, {device}\n{HEADER}",
          flush=True)
    records = edit_records(world, args.edits + 1)
    rows = []

    floor_pass(model, tokenizer, records[0], device)        # warm-up
    base = reset_peak(device)
    t0 = clock(device)
    for record in records[1:]:
        floor_pass(model, tokenizer, record, device)
    floor = (clock(device) - t0) / args.edits
    rows.append({"shape": shape.name, "editor": "floor", "edits": args.edits, "turn_size": 1, "s_per_edit": floor,
                 "s_per_turn": floor, "ratio_floor": 1.0, "peak_mb": max(0.0, peak_mb(device) - base)})
    print_row(rows[-1])

    context = EditContext(family=FAMILIES[shape.family], device=device, seed=0, locality_pool=world.locality_pool(),
                          model_fingerprint=fingerprint(model), stats_dir=tmp / shape.name)
    hps, errors = {}, {}
    for name in names:
        try:
            hps[name] = hparams_for(name, shape, params, args.edits, args.quick)
        except Exception as exc:
            errors[name] = one_line(exc)
    mass = {n: hp for n, hp in hps.items() if issubclass(editor_class(n), MassEditor)}
    stats_s = None
    if mass:   # once per shape, for every statistics editor asked for
        try:
            stats_s, what = write_stats(model, tokenizer, mass, world, args.stats_texts, context.stats_dir)
            print(f"   layer statistics for {', '.join(mass)}: {what}, {stats_s:.1f} s (one-off)", flush=True)
        except Exception as exc:
            errors |= {n: f"layer statistics: {one_line(exc)}" for n in mass}
    for name in names:
        row = {"shape": shape.name, "editor": name, "stats_s": stats_s if name in mass else None}
        if name in errors:
            row["error"] = errors[name]
        else:
            try:
                row |= bench_editor(name, hps[name], model, tokenizer, context, records, device)
                row["ratio_floor"] = row["s_per_edit"] / floor
            except Exception as exc:   # one editor's failure is its row, not the benchmark's end
                row["error"] = one_line(exc)
        rows.append(row)
        print_row(row)
    del model
    release(device)
    return rows


# -- output ------------------------------------------------------------------------------------------------
COLUMNS = ["shape", "editor", "edits", "turn_size", "s_per_edit", "s_per_turn", "ratio_floor", "peak_mb", "first_s",
           "stats_s", "error", "hardware", "threads"]
HEADER = (f"{'shape':18s}{'editor':11s}{'edits':>6s}{'turn':>5s}{'s/edit':>10s}{'s/turn':>10s}{'x floor':>9s}"
          f"{'peak MB':>9s}{'first s':>9s}{'stats s':>9s}")


def print_row(row: dict) -> None:
    def num(key, fmt):
        value = row.get(key)
        return format(value, fmt) if pd.notna(value) else "-"

    head = f"{row['shape']:18s}{row['editor']:11s}"
    if row.get("error"):
        print(f"{head}error: {row['error']}", flush=True)
        return
    per_turn = num("s_per_turn", ".4f") if row.get("turn_size", 1) > 1 else "-"
    print(f"{head}{row['edits']:6d}{row['turn_size']:5d}{num('s_per_edit', '.4f'):>10s}{per_turn:>10s}"
          f"{num('ratio_floor', '.1f'):>9s}{num('peak_mb', '.0f'):>9s}{num('first_s', '.2f'):>9s}"
          f"{num('stats_s', '.1f'):>9s}", flush=True)


def main(argv=None) -> None:
    gpu = torch.cuda.is_available()
    default_shapes = [s for s in SHAPES if gpu or not SHAPES[s].gpu]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--editors", default=",".join(EDITORS), help="comma-separated (default: every registered one)")
    ap.add_argument("--shapes", default=",".join(default_shapes), help=f"comma-separated, of: {', '.join(SHAPES)}")
    ap.add_argument("--edits", type=int, default=20, help="timed edits per editor (after one single-edit turn)")
    ap.add_argument("--stats-texts", type=int, default=2000, help="texts in the layer-statistics corpus")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--quick", action="store_true", help=f"3 edits, at most {QUICK_ITERS} iterations, 100 texts")
    ap.add_argument("--out", type=Path, default=ROOT / "reports" / "bench" / "cost.csv")
    args = ap.parse_args(argv)
    if args.quick:
        args.edits, args.stats_texts = 3, 100
    names, shapes = args.editors.split(","), args.shapes.split(",")
    unknown = [n for n in names if n not in EDITORS] + [s for s in shapes if s not in SHAPES]
    if unknown or args.edits < 1:
        ap.error(f"unknown editor(s) or shape(s) {unknown}; editors: {', '.join(EDITORS)}; shapes: {', '.join(SHAPES)}"
                 if unknown else "--edits must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)

    params = load_params()
    world = world_from_params(params)
    tokenizers, rows = {}, []
    print(f"hardware: {hardware(detailed=True)}; torch threads {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory(prefix="bench-cost-") as tmp:
        for name in shapes:
            shape = SHAPES[name]
            if shape.gpu and not gpu:
                rows.append({"shape": name, "editor": "*", "error": "needs a GPU (full model in bf16)"})
                print_row(rows[-1])
                continue
            add_bos = shape.family != "gptj"   # LLaMA / Mistral tokenizers prepend <s>; GPT-J's does not
            if add_bos not in tokenizers:
                tokenizers[add_bos] = train_tokenizer(world, None, vocab_size=2048, add_bos=add_bos)
            try:
                rows += bench_shape(shape, names, params, world, tokenizers[add_bos], args, Path(tmp))
            except Exception as exc:   # the model itself did not build or run (out of memory, ...)
                rows.append({"shape": name, "editor": "*", "error": one_line(exc)})
                print_row(rows[-1])
    frame = pd.DataFrame(rows, columns=COLUMNS[:-2]).round(6)
    frame["hardware"], frame["threads"] = hardware(), torch.get_num_threads()
    io.write_csv(args.out, frame)
    print(f"\nwrote {args.out} ({len(frame)} rows)")


if __name__ == "__main__":
    main()
