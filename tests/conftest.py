"""Shared fixtures. Nothing a test does writes into the repository: every output and model cache
goes under pytest's tmp dirs, and one warm-started tiny policy is built per session and shared.

No test depends on the CPU's kernel path (AVX2 / AVX-512 / ARM, MKL's or oneDNN's own dispatch): runs are
compared side by side on the same machine, recorded references are run in float64 from a float64 start
(tests/regression), and learning is asserted over several seeds with measured margins."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

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
