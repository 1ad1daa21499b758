"""Shared fixtures. Nothing a test does writes into the repository: every output and model cache
goes under pytest's tmp dirs, and one warm-started tiny policy is built per session and shared."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# One CPU kernel path for every test, set before torch runs a kernel: the recorded references
# (tests/regression) and the learning thresholds of the short end-to-end runs were measured with
# torch's AVX2 kernels. AVX-512 kernels round differently in the last bits, and a 300- or 800-step
# warm start amplifies that into a different model (a different held-out accuracy), so on an
# AVX-512 machine those tests would check a different run than the one measured. AVX2 runs on every
# x86-64 CPU these tests target; set ATEN_CPU_CAPABILITY yourself to override (e.g. `default`).
os.environ.setdefault("ATEN_CPU_CAPABILITY", "avx2")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `import grpo_testkit` from any test folder

from grpo_testkit import compose_config, tiny_lm  # noqa: E402

# The models here are tiny: one intra-op thread is about as fast as two, and it avoids the 10x slow-down
# of OpenMP threads spinning against each other when the machine runs anything else (set
# GRPO_TEST_THREADS to change it).
torch.set_num_threads(int(os.environ.get("GRPO_TEST_THREADS", "1")))


@pytest.fixture(scope="session")
def warm_cache(tmp_path_factory) -> Path:
    """model.cache_dir holding the debug=default warm start (its small model on the easy arithmetic task)."""
    from grpo.pipeline import build

    cache = tmp_path_factory.mktemp("warm_cache")
    cfg = compose_config(["debug=default", f"model.cache_dir={cache}"], output_dir=tmp_path_factory.mktemp("warm_run"))
    build(cfg)  # the same code path as a run, so the cache key is the one later runs look up
    return cache


@pytest.fixture(scope="session")
def base_overrides(warm_cache) -> list[str]:
    """debug=default with the shared warm-start cache: a run that starts in about a second."""
    return ["debug=default", f"model.cache_dir={warm_cache}"]


@pytest.fixture(scope="session")
def saved_tiny_model(tmp_path_factory) -> Path:
    """A local directory with a saved random tiny model and its char tokenizer (for model=hf)."""
    path = tmp_path_factory.mktemp("saved_tiny_model")
    model, tokenizer = tiny_lm(seed=3)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
