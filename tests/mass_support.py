"""Layer statistics for the fixture models (MEMIT and AlphaEdit read them from a stats folder)."""
from __future__ import annotations

from pathlib import Path

from lifelong.editors.common.covariance import write_layer_stats

# the tiny-model settings of params.yaml's tiny_hparams, with fewer z steps to keep the tests fast
TINY_Z = {"layers": [0, 1], "v_lr": 2.0, "v_num_grad_steps": 10, "clamp_norm_factor": 4.0, "v_weight_decay": 1e-3}


def stats_corpus(world) -> list[str]:
    """The world's sentences without the edit subjects' facts (spec §5: a corpus holding the edited facts would
    make C and P protect exactly what the edits change)."""
    edited = [world.subject(i) for i in range(world.config.edit_subjects)]
    return [s for s in world.pretraining_sentences() if not any(name in s for name in edited)]


def write_fixture_stats(model, tokenizer, world, directory: Path) -> Path:
    """E[k kᵀ] of every down projection's input over `stats_corpus(world)`, as a stats folder."""
    write_layer_stats(model, tokenizer, None, stats_corpus(world), directory, corpus="small world, no edit subjects")
    return directory
