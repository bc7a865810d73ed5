"""The embedded testbed: a tokenizer trained on the fact world and tiny GPT-2 / LLaMA / Mistral models
pretrained until they know the world's facts.

Models are saved with `save_pretrained` and loaded back through the Auto classes, exactly the code
path of a hub model, so nothing downstream knows it is looking at a toy.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..data.world import RELATIONS, SYLLABLES, WISE_SEED_WORDS, World
from ..models.tokenization import pad

SPECIALS = {"pad": "<pad>", "bos": "<s>", "eos": "</s>", "unk": "<unk>"}


def train_tokenizer(world: World, out_dir: str | Path, *, vocab_size: int = 2048, extra_names: int = 5_000,
                    add_bos: bool = False, extra_text: list[str] = ()):
    """Byte-level BPE on the world's text. Byte-level means any string still tokenizes (no <unk>).

    add_bos: LLaMA/Mistral-style tokenizers prepend <s>; GPT-2-style ones do not.
    extra_text: more training text (the grounding sentences of real datasets).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = world.pretraining_sentences()
    corpus += [world.subject(i) for i in range(world.n_known_subjects, world.n_known_subjects + extra_names)]
    # Objects are rare in the corpus but are the answers: repeat them so BPE keeps each one whole. Split
    # answers would give the unedited model partial teacher-forced credit on their predictable tails.
    corpus += [" ".join(objs) for _, objs in RELATIONS.values()] * 200 + list(WISE_SEED_WORDS) + SYLLABLES
    corpus += list(extra_text)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIALS.values()),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus, trainer)
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=SPECIALS["pad"], bos_token=SPECIALS["bos"],
                                   eos_token=SPECIALS["eos"], unk_token=SPECIALS["unk"])
    if out_dir is not None:
        fast.save_pretrained(out_dir)
    return fast


@dataclass(frozen=True)
class TinyModelConfig:
    family: Literal["gpt2", "llama", "mistral"]
    d_model: int = 128
    n_layers: int = 8
    n_heads: int = 4
    d_ff: int = 512
    max_positions: int = 64


def build_model(cfg: TinyModelConfig, tokenizer, seed: int = 0):
    """A freshly initialised tiny causal LM of the given family."""
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, MistralConfig

    torch.manual_seed(seed)
    common = dict(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                  eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    if cfg.family == "gpt2":
        config = GPT2Config(n_embd=cfg.d_model, n_layer=cfg.n_layers, n_head=cfg.n_heads, n_inner=cfg.d_ff,
                            n_positions=cfg.max_positions, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                            **common)
    elif cfg.family == "llama":
        config = LlamaConfig(hidden_size=cfg.d_model, num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
                             num_key_value_heads=cfg.n_heads, intermediate_size=cfg.d_ff,
                             max_position_embeddings=cfg.max_positions, tie_word_embeddings=True, **common)
    elif cfg.family == "mistral":
        # grouped-query attention and a sliding window: what distinguishes Mistral from LLaMA
        config = MistralConfig(hidden_size=cfg.d_model, num_hidden_layers=cfg.n_layers,
                               num_attention_heads=cfg.n_heads, num_key_value_heads=max(1, cfg.n_heads // 2),
                               intermediate_size=cfg.d_ff, max_position_embeddings=cfg.max_positions,
                               sliding_window=cfg.max_positions, tie_word_embeddings=True, **common)
    else:
        raise ValueError(f"unknown family {cfg.family!r}")
    return AutoModelForCausalLM.from_config(config)


@dataclass(frozen=True)
class PretrainConfig:
    epochs: int = 60
    batch_size: int = 64
    lr: float = 3e-3
    warmup_steps: int = 100
    weight_decay: float = 0.01
    seed: int = 0
    threads: int = 0          # 0: torch's default


def pretrain(model, tokenizer, sentences: list[str], cfg: PretrainConfig, *, progress: bool = True) -> dict:
    """Plain next-token training on the fact sentences until the model has memorised them."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    gen = torch.Generator().manual_seed(cfg.seed)
    eos = tokenizer.eos_token_id
    encoded = [tokenizer(s)["input_ids"] + [eos] for s in sentences]
    ids, mask = pad(encoded, tokenizer.pad_token_id)
    span = _BUCKET_WINDOW * cfg.batch_size  # batches per epoch, as _length_bucketed_batches cuts them
    steps_per_epoch = sum(math.ceil(min(span, len(encoded) - s) / cfg.batch_size) for s in range(0, len(encoded), span))
    total = cfg.epochs * steps_per_epoch
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / cfg.warmup_steps) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total))))
    model.train()
    start, losses = time.perf_counter(), []
    bar = tqdm(range(cfg.epochs), desc="pretrain", unit="epoch", disable=not progress)
    lengths = mask.sum(1)
    for _ in bar:
        for idx in _length_bucketed_batches(lengths, cfg.batch_size, gen):
            batch_ids, batch_mask = ids[idx], mask[idx]
            cut = int(batch_mask.sum(1).max())
            batch_ids, batch_mask = batch_ids[:, :cut], batch_mask[:, :cut]
            logits = model(input_ids=batch_ids, attention_mask=batch_mask).logits[:, :-1]
            targets = batch_ids[:, 1:].masked_fill(batch_mask[:, 1:] == 0, -100)
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(loss.item())
        bar.set_postfix(loss=f"{sum(losses[-steps_per_epoch:]) / steps_per_epoch:.3f}")
    model.eval()
    return {"pretrain_seconds": time.perf_counter() - start, "final_loss": sum(losses[-steps_per_epoch:]) / steps_per_epoch,
            "steps": total, "sentences": len(sentences)}


_BUCKET_WINDOW = 32


def _length_bucketed_batches(lengths: torch.Tensor, batch_size: int, gen: torch.Generator,
                             window: int = _BUCKET_WINDOW) -> list[torch.Tensor]:
    """One epoch of batches: shuffle, sort each window of `window` batches by length, cut, and shuffle
    the batch order. Batches hold sentences of similar length, so short world facts are not padded
    to the longest real-dataset question in the batch (the grounded corpus mixes 10- and 100-token lines)."""
    perm = torch.randperm(len(lengths), generator=gen)
    span = window * batch_size
    batches = []
    for start in range(0, len(perm), span):
        chunk = perm[start:start + span]
        chunk = chunk[torch.argsort(lengths[chunk], stable=True)]
        batches += list(chunk.split(batch_size))
    order = torch.randperm(len(batches), generator=gen)
    return [batches[i] for i in order]


def with_bos(tokenizer):
    """The same vocabulary, but prepending <s> like LLaMA/Mistral tokenizers do."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    backend = tokenizer.backend_tokenizer
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", backend.token_to_id("<s>"))])
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token=SPECIALS["pad"], bos_token=SPECIALS["bos"],
                                   eos_token=SPECIALS["eos"], unk_token=SPECIALS["unk"])


def world_from_params(params: dict) -> World:
    from ..core.config import fill
    from ..data.world import WorldConfig

    return World(fill(WorldConfig, params.get("world"), "params.yaml world"))


def fact_accuracy(model, tokenizer, world: World, batch_size: int = 512) -> dict:
    """Teacher-forced accuracy on every known fact under every template, plus the pre-edit
    reliability of the counterfactual edits (low = the model holds the true fact, not the target)."""
    from ..eval.teacher_forced import score_pairs

    facts = list(world.known_facts())
    report = {}
    for t in range(world.config.templates):
        report[f"template_{t}"] = float(score_pairs(model, tokenizer, [(f.render(t), f.obj) for f in facts],
                                                    batch_size=batch_size).accuracy.mean())
    report["fact_accuracy"] = sum(report.values()) / world.config.templates
    edits = list(world.records(0, world.n_known_edits))
    report["edit_target_accuracy"] = float(score_pairs(model, tokenizer, [(r.prompt, r.target) for r in edits],
                                                       batch_size=batch_size).accuracy.mean())
    report["known_facts"] = len(facts)
    return report


def pretraining_corpus(params: dict) -> tuple[list[str], list]:
    """Everything the testbed models are pretrained on: every known fact of the world under every
    template, plus the true facts of the real datasets in params.yaml `grounding` (when their files
    are in the data dir; see grounding.py). Returns (sentences, grounded sets)."""
    from ..core.config import fill
    from ..data.grounding import GroundingConfig, grounded_sentences, grounded_sets

    cfg = fill(GroundingConfig, params.get("grounding"), "params.yaml grounding")
    sets = grounded_sets(params)
    return world_from_params(params).pretraining_sentences() + grounded_sentences(sets, cfg.repeat), sets


def grounded_accuracy(model, tokenizer, grounded, batch_size: int = 256) -> dict:
    """What a pretrained model knows of one real dataset, before any edit (teacher-forced accuracy):
    the true answer to the edit prompts and their rephrases, the locality answers, and the edit
    targets (low = the model holds the fact the edit overrides)."""
    from ..eval.teacher_forced import score_pairs

    if grounded.corpus is None:
        return grounded.report()
    records = grounded.records
    taught = {(p, a) for p, a in grounded.corpus.pairs}
    mean = lambda pairs: (float(score_pairs(model, tokenizer, pairs, batch_size=batch_size).accuracy.mean())
                          if pairs else None)
    truth = [(r.prompt, r.ground_truth) for r in records if (r.prompt, r.ground_truth) in taught]
    rephrase = [(p, r.ground_truth) for r in records for p in r.rephrases if (p, r.ground_truth) in taught]
    locality = [(r.locality_prompt, r.locality_answer) for r in records if r.locality_prompt]
    return {"dataset": grounded.dataset, "status": "grounded", "records": len(records),
            "sentences": len(grounded.corpus.pairs), "truth_accuracy": mean(truth),
            "rephrase_truth_accuracy": mean(rephrase), "locality_accuracy": mean(locality),
            "edit_target_accuracy": mean([(r.prompt, r.target) for r in records])}


def pretrain_named(name: str, params: dict, tokenizer_dir: str | Path, out_dir: str | Path,
                   *, progress: bool = True) -> dict:
    """Build, pretrain, evaluate and save the testbed model `params.testbed[name]`."""
    from transformers import AutoTokenizer

    from ..core.config import fill
    from ..core.errors import unknown_name

    arch = params.get("testbed") or {}
    if name not in arch:
        raise unknown_name("testbed model", name, list(arch))
    cfg = fill(TinyModelConfig, arch[name], f"params.yaml testbed.{name}")
    train_cfg = fill(PretrainConfig, params.get("pretrain"), "params.yaml pretrain")
    world = world_from_params(params)
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    if cfg.family != "gpt2":
        tokenizer = with_bos(tokenizer)
    model = build_model(cfg, tokenizer, seed=train_cfg.seed)
    sentences, grounded = pretraining_corpus(params)
    info = pretrain(model, tokenizer, sentences, train_cfg, progress=progress)
    report = {"model": name, "family": cfg.family,
              "parameters": sum(p.numel() for p in model.parameters()), **info,
              **fact_accuracy(model, tokenizer, world),
              "grounding": {g.dataset: grounded_accuracy(model, tokenizer, g) for g in grounded}}
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return report


def stats_corpus(params: dict) -> tuple[list[str], str]:
    """The text layer statistics are computed on (MEMIT's C, AlphaEdit's P; spec baselines.md §5), the testbed's
    analogue of Wikipedia: every distinct pretraining sentence that mentions no subject the grid edits (the world's
    locality and pool facts, and the real datasets' locality pairs). Sentences about an edited subject are left
    out, so that C and P do not protect the very facts the edits change (spec §5: exclude the edit subjects).
    Returns (texts, a one-line description for the statistics files)."""
    sentences, grounded = pretraining_corpus(params)
    world = world_from_params(params)
    edited = {world.subject(i) for i in range(world.config.edit_subjects)}
    edited |= {r.subject for g in grounded for r in g.records if r.subject}
    texts = [s for s in dict.fromkeys(sentences) if not any(subject in s for subject in edited)]
    description = (f"testbed pretraining sentences without the {len(edited)} edited subjects: {len(texts)} of "
                   f"{len(set(sentences))} distinct sentences")
    return texts, description
