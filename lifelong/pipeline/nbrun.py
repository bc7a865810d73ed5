"""Run a parameterised notebook with papermill, as every DVC stage does.

    python -m lifelong.pipeline.nbrun notebooks/edit.ipynb reports/notebooks/edit-x.ipynb -p model tiny-llama ...

On top of papermill it
  * creates the output folders (papermill and DVC do not), including those of `-p out_* PATH`;
  * turns a LifelongError raised inside the notebook into one line on stderr and exit code 2;
  * opens the executed notebook with a short Markdown header: what ran (notebook and DVC stage), with which
    parameters, on what hardware, and how long it took;
  * normalises the executed notebook: no timestamps, durations or random ids, no progress bars,
    each warning shown once, no giant outputs, so a rerun with the same results rewrites the same bytes
    (only the header's wall time can differ, and it is rounded to two significant figures).
    Figures stay: they are what a reader opens the notebook for.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

import nbformat

MAX_OUTPUT_BYTES = 200_000      # text and tables; a bigger output is replaced by a one-line stub
MAX_IMAGE_BYTES = 400_000       # base64 PNG; figures are drawn at 72 dpi in the notebooks
_VOLATILE_NB = ("start_time", "end_time", "duration", "input_path", "output_path", "exception")
_PROGRESS = re.compile(r"\r|\d+%\|")   # tqdm redraws with carriage returns and "NN%|" bars
HEADER_ID = "run-header"


def _clean_stderr(text: str, seen: set[str]) -> str:
    """stderr without progress bars, and without lines an earlier cell already showed (warnings once)."""
    kept = []
    for line in text.splitlines(keepends=True):
        key = line.strip()
        if not key or _PROGRESS.search(line) or key in seen:
            continue
        seen.add(key)
        kept.append(line)
    return "".join(kept)


def _size(out) -> int:
    return len(str(out))


def duration(seconds: float) -> str:
    """Wall time in words, to two significant figures, so that reruns of the same work read the same."""
    if seconds < 60:
        return f"{float(f'{seconds:.2g}'):g} s"
    minutes = seconds / 60
    return f"{float(f'{minutes:.2g}'):g} min" if minutes < 100 else f"{minutes / 60:.1f} h"


def _short(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def run_header(notebook: str, params: dict, stage: str | None, took: str) -> str:
    """The Markdown that opens an executed notebook: what ran, with which parameters, where, and how long (`took`)."""
    from ..core.machine import hardware

    what = f"`{notebook}`" + (f", as DVC stage `{stage}` (rerun it with `dvc repro {stage}`)" if stage else "")
    shown = ", ".join(f"`{name} = {_short(value)}`" for name, value in params.items()) or "the notebook's defaults"
    return "\n".join([
        "**How this notebook ran** (header written by `lifelong.pipeline.nbrun`)",
        "",
        f"- **What:** {what}",
        f"- **Parameters:** {shown}; every other setting is read from `params.yaml`",
        f"- **Hardware:** {hardware(detailed=True)}",
        f"- **Time:** {took}",
    ])


def normalise(path: str | Path, header: str | None = None) -> None:
    """Strip what changes between identical runs; put `header` (if given) first, as a Markdown cell."""
    path = Path(path)
    if not path.exists():
        return
    nb = nbformat.read(path, as_version=4)
    if header is not None:
        nb.cells = [c for c in nb.cells if c.get("id") != HEADER_ID]
        cell = nbformat.v4.new_markdown_cell(header)
        cell["id"] = HEADER_ID
        nb.cells.insert(0, cell)
    pm = nb.metadata.get("papermill", {})
    for key in _VOLATILE_NB:
        pm.pop(key, None)
    nb.metadata.pop("widgets", None)
    seen: set[str] = set()
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        cell.metadata.pop("papermill", None)
        if "injected-parameters" in cell.metadata.get("tags", []):
            cell["id"] = "injected-parameters"
        if cell.cell_type != "code":
            continue
        kept = []
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                out["text"] = _clean_stderr(out.get("text", ""), seen)
                if not out["text"]:
                    continue
            is_image = "image/png" in out.get("data", {})
            if _size(out) > (MAX_IMAGE_BYTES if is_image else MAX_OUTPUT_BYTES):
                limit = (MAX_IMAGE_BYTES if is_image else MAX_OUTPUT_BYTES) // 1000
                out = nbformat.v4.new_output("stream", name="stdout", text=f"[output over {limit} kB removed]\n")
            kept.append(out)
        cell["outputs"] = kept
    nbformat.write(nb, path)


def _out_paths(params: list[tuple[str, str]]) -> list[Path]:
    return [Path(v) for k, v in params if k.startswith("out_")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lifelong.pipeline.nbrun", description=__doc__.splitlines()[0])
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("-p", "--parameters", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    parser.add_argument("-y", "--yaml", default=None, help="parameters as a YAML mapping")
    parser.add_argument("--timeout", type=int, default=None, help="seconds per cell")
    args = parser.parse_args(argv)

    import papermill as pm
    import yaml

    from ..core.paths import ROOT

    params: dict = {}
    for name, raw in args.parameters:
        params[name] = yaml.safe_load(raw) if raw not in ("",) else raw
    if args.yaml:
        params.update(yaml.safe_load(args.yaml) or {})
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    for out in _out_paths([(k, str(v)) for k, v in params.items()]):
        (out if out.suffix == "" else out.parent).mkdir(parents=True, exist_ok=True)
    started, failed = time.perf_counter(), True
    try:
        pm.execute_notebook(args.input, args.output, parameters=params, kernel_name="python3", language="python",
                            cwd=str(ROOT), progress_bar=False, log_output=False,
                            execution_timeout=args.timeout, record_timing=False)
        failed = False
    except pm.PapermillExecutionError as exc:
        user_error = exc.ename in ("LifelongError", "ConfigError", "DataError", "MissingDataError")
        print(f"error: {exc.evalue}" if user_error else f"error in {args.input}: {exc.ename}: {exc.evalue}\n"
              f"(the executed notebook with the traceback is {args.output})", file=sys.stderr)
        return 2 if user_error else 1
    finally:
        took = f"{duration(time.perf_counter() - started)} wall clock"
        header = run_header(args.input, params, os.environ.get("DVC_STAGE"),
                            took + (", then it **failed** (see the error below)" if failed else ""))
        normalise(args.output, header)
    return 0


if __name__ == "__main__":
    sys.exit(main())
