"""Hyperparameter sweeps: where a paper's settings do not transfer to a small model, try a few values once,
record every run, and choose by a stated rule, never by eye.

`sweep(...)` runs one editor over the cross product of the values given (or over an explicit list of settings,
for values that only make sense together, such as WISE's three margins), on each dataset, at each T (one
block of T edits, or `blocks` blocks for T = 1), and returns one row per run. `choose(...)` applies the rule:
the setting with the best mean of reliability and generalization at the largest T, among those whose locality
agreement stays at or above `min_agreement` on every dataset; if none does, the setting with the best
locality agreement (and the table says so).
"""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from .runner import RunSpec, run


def settings_of(values: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """A grid {key: [values]} as its cross product, or an explicit list of settings as given."""
    if isinstance(values, Mapping):
        names = list(values)
        return [dict(zip(names, combo)) for combo in itertools.product(*(values[n] for n in names))]
    return [dict(setting) for setting in values]


def _slug(value: Any) -> str:
    return "+".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def sweep(*, model: str, editor: str, values: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]],
          datasets: Sequence[str],
          out_dir: str | Path, params_path: str | Path, n_edits: Sequence[int] = (1, 10), blocks_at_one: int = 10,
          fixed: Mapping[str, Any] | None = None, seed: int = 0) -> pd.DataFrame:
    """One row per (setting, dataset, T): the setting's values, the headline metrics and the seconds per edit."""
    rows = []
    for setting in settings_of(values):
        label = ", ".join(f"{k}={_slug(v)}" for k, v in setting.items())
        for dataset in datasets:
            for n in n_edits:
                folder = Path(out_dir) / editor / "-".join(f"{k}{_slug(v)}" for k, v in setting.items()) / dataset / f"T{n}"
                summary = run(RunSpec(model=model, dataset=dataset, editor=editor, n_edits=int(n), seed=seed,
                                      n_blocks=blocks_at_one if n == 1 else 1, overrides={**(fixed or {}), **setting},
                                      out_dir=folder, params_path=Path(params_path), progress=False))
                rows.append({"editor": editor, "setting": label, **{k: _slug(v) for k, v in setting.items()},
                             "dataset": dataset, "n_edits": int(n),
                             **{k: summary[k] for k in ("reliability", "generalization", "locality_agreement",
                                                        "seconds_per_edit")}})
    return pd.DataFrame(rows)


def choose(frame: pd.DataFrame, min_agreement: float = 0.9) -> tuple[str, str]:
    """(the chosen setting, why), by the rule in the module docstring."""
    top = frame[frame.n_edits == frame.n_edits.max()]
    per = top.groupby("setting").agg(score=("reliability", "mean"), gen=("generalization", "mean"),
                                     agreement=("locality_agreement", "min"))
    per["score"] = (per.score + per.gen) / 2
    ok = per[per.agreement >= min_agreement]
    if len(ok):
        best = ok.score.idxmax()
        return best, (f"best (Rel+Gen)/2 = {ok.score.max():.3f} at T={int(top.n_edits.max())} among the "
                      f"{len(ok)} of {len(per)} settings with locality agreement >= {min_agreement} on every dataset")
    best = per.agreement.idxmax()
    return best, (f"no setting keeps locality agreement >= {min_agreement}; the best agreement "
                  f"({per.agreement.max():.3f}) is chosen")
