"""End to end with real parts, offline, by config alone: a Qwen2-shaped model built from a transformers config and a
byte-level BPE tokenizer with a chat template (trained and saved here), a local parquet dataset read through
`datasets` whose answers are \\boxed{} expressions, prompts through the chat template, rewards = math-verify
correctness + a format reward. A short supervised warm start first (the model's own option), then GRPO raises
held-out greedy accuracy; again with LoRA and gradient checkpointing (which must really recompute).

The data: one-operation arithmetic questions in words (operands up to 50); the warm start's worked solutions drop a
needed carry or borrow 60% of the time, so the warm-started model is often wrong where sampling sometimes finds the
right answer: what GRPO learns from.

Machine-independent: the 800-step warm start is built here in float32, so the model it gives depends on the CPU's
kernels (on one machine: 30.7% held-out greedy accuracy with AVX-512 kernels, 6.0% with ATEN_CPU_CAPABILITY=avx2),
and so does what GRPO gets out of it. The tests therefore ask only for a gain over that same warm start, summed over
SEEDS GRPO runs, never a threshold of one run or of the warm start.
"""

from __future__ import annotations

from collections import Counter
from contextlib import contextmanager

import pytest
import torch

from grpo.models.demo_parts import write_demo_parts
from grpo.pipeline import run
from grpo_testkit import compose_config, read_scalars

pytestmark = pytest.mark.slow

SEEDS = (0, 1, 2)  # GRPO runs (rollout sampling, question order) from the one warm start
# Held-out greedy accuracy gains (150 questions: 1 question = 0.0067) of seeds 0, 1, 2, measured with these settings
# on one machine (AMD EPYC) on two kernel paths, each with its own warm start (issue 19's report):
#   ATEN_CPU_CAPABILITY unset (AVX-512), start 30.7%: full +0.013 +0.000 +0.013 (sum +0.027); LoRA +0.007 +0.000 +0.060 (+0.067)
#   ATEN_CPU_CAPABILITY=avx2,            start  6.0%: full -0.020 +0.027 +0.033 (sum +0.040); LoRA -0.013 +0.020 +0.040 (+0.047)
# One seed can lose; the sum over the seeds gained 4 to 10 questions. The assertion asks for 1 question net (a run
# that does not update the policy gains exactly 0): a larger margin needs a setting that learns more from the
# AVX-512 warm start (there 30 steps hardly move greedy accuracy).
MIN_TOTAL_GAIN = 1 / 150


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    return write_demo_parts(root / "parts", train_size=3000, test_size=150, num_ops=1, max_operand=50, seed=0), root


def real_run(demo, name: str, extra: list[str], seed: int) -> dict[str, float]:
    parts, root = demo
    overrides = [
        "model=hf", f"model.name_or_path={parts / 'model'}", "model.warmstart_steps=800", "model.warmstart_lr=5e-3",
        "model.warmstart_batch_size=64", f"model.cache_dir={root / 'cache'}",
        "task=dataset", f"task.path={parts / 'data' / 'train.parquet'}", f"task.heldout_path={parts / 'data' / 'test.parquet'}",
        "task.solution_column=solution", "prompt=chat", "reward=math",
        "grpo.steps=30", "grpo.prompts_per_step=16", "grpo.group_size=8", "sampling.max_new_tokens=24",
        "eval.prompts=150", "eval.batch_size=150", "eval.k=0", "eval.every_n_steps=100", f"seed={seed}",
        *extra,
    ]
    out = root / f"{name}-{seed}"
    run(compose_config(overrides, output_dir=out))
    scalars = read_scalars(out / "tb")
    return {tag: values[-1][1] for tag, values in scalars.items()}


def gains(logged: list[dict[str, float]]) -> list[float]:
    return [run_["final/accuracy"] - run_["initial/accuracy"] for run_ in logged]


@contextmanager
def counting_forwards():
    """{module class name: forward calls} of every module while inside (a global forward hook)."""
    counts = Counter()
    handle = torch.nn.modules.module.register_module_forward_hook(lambda module, args, output: counts.update([type(module).__name__]))
    try:
        yield counts
    finally:
        handle.remove()


FULL = ["optimizer.lr=3e-4"]
LORA = ["adapter=lora", "adapter.r=8", "adapter.alpha=16", "model.gradient_checkpointing=true", "optimizer.lr=3e-3"]


def test_full_fine_tuning_raises_heldout_accuracy(demo):
    logged = [real_run(demo, "full", FULL, seed) for seed in SEEDS]
    assert sum(gains(logged)) >= MIN_TOTAL_GAIN - 1e-6, gains(logged)
    assert all("rollout/reward/correct" in r and "rollout/reward/format" in r for r in logged)  # each component logged


def test_lora_with_gradient_checkpointing_raises_heldout_accuracy(demo):
    logged = []
    for seed in SEEDS:
        with counting_forwards() as calls:
            logged.append(real_run(demo, "lora", LORA, seed))
        # every forward of the model calls each layer's attention once; checkpointing calls it again in the backward
        recomputed = calls["Qwen2Attention"] - 2 * calls["Qwen2Model"]  # the demo model has 2 layers
        assert recomputed > 0, f"model.gradient_checkpointing=true recomputed nothing: {dict(calls)}"
    assert sum(gains(logged)) >= MIN_TOTAL_GAIN - 1e-6, gains(logged)
