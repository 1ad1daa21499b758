#!/usr/bin/env bash
# Create (or reuse) .venv with the project installed. Cheap when nothing changed.
# torch: a machine without torch gets the pinned CPU build (torch==2.13.0); a venv that already
# has torch (e.g. a CUDA build you installed) keeps it. Every other package is installed at the
# version in constraints.txt (the versions README's figures were measured with).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.grpo-installed
want=$(cat pyproject.toml constraints.txt scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/pip install -q torch==2.13.0
  .venv/bin/pip install -q -c constraints.txt -e ".[dev]"
  echo "$want" > "$stamp"
fi
