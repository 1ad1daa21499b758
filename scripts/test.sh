#!/usr/bin/env bash
# Set up (or reuse) .venv, then run the whole test suite, slow and multi-process tests included.
# With arguments: pytest with them (e.g. `bash scripts/test.sh tests/algo -x`). Without: the single-process
# tests on two workers (each test runs torch on one thread), then the 2-process runs alone, so that no
# two of those share the cores.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ "$#" -gt 0 ]; then
  exec .venv/bin/python -m pytest -q "$@"
fi
workers=$(.venv/bin/python -c "import os; print(max(1, min(2, len(os.sched_getaffinity(0)))))")
.venv/bin/python -m pytest -q -n "$workers" -m "not multiprocess"
exec .venv/bin/python -m pytest -q -m multiprocess
