"""What a user reads during a run without a terminal (a log file): a line per GRPO step (log_every=1) with
step i/N, elapsed and remaining time, reward, accuracy and KL, and no third-party tips or warnings."""

from __future__ import annotations

import os
import subprocess
import sys

from grpo_testkit import REPO


def test_log_file_tells_the_story_of_the_run(base_overrides, tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]), OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, str(REPO / "train.py"), *base_overrides, "callbacks.progress.log_every=1", f"hydra.run.dir={out}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (out / "train.log").read_text()
    for step in (1, 2):  # debug: 2 GRPO steps
        line = next(line for line in log.splitlines() if f"GRPO step {step}/2" in line)
        for words in ("elapsed", "remaining", "reward", "acc", "kl", "held-out acc"):
            assert words in line, (words, line)
    terminal = proc.stdout + proc.stderr
    for noise in ("litlogger", "LeafSpec", "Setting accelerator to CPU", "INFO: GPU available"):
        assert noise not in terminal, noise
