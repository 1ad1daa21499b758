"""End to end with real parts, offline, by config alone: a Qwen2-shaped model and a byte-level BPE tokenizer with a
chat template, a local parquet dataset read through `datasets` whose answers are \\boxed{} expressions, prompts
through the chat template, rewards = math-verify correctness + a format reward. GRPO raises held-out greedy accuracy,
with full fine-tuning and with LoRA + gradient checkpointing (which must really recompute).

The data: one-operation arithmetic questions in words (operands up to 50); the warm start's worked solutions drop a
needed carry or borrow 60% of the time, so the warm-started model is often wrong where sampling sometimes finds the
right answer: what GRPO learns from.

Machine-independent: the runs start from a warm-started policy stored here (fixtures/demo_start: the demo model after
its 800-step supervised warm start, 0.2M parameters), not from a warm start rebuilt at test time, whose result
depends on the CPU's float32 kernels (30.7% with AVX-512 kernels, 6.0% with ATEN_CPU_CAPABILITY=avx2 on one machine).
`python tests/test_real_parts_e2e.py --record-start` rewrites it (only when the demo parts change; then re-measure the
gains with --measure and update the table below). The gains were measured from that start on two kernel paths.
"""

from __future__ import annotations

import sys
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from grpo.models.demo_parts import write_demo_parts
from grpo.pipeline import run

sys.path.insert(0, str(Path(__file__).resolve().parent))
from grpo_testkit import FIXTURES, compose_config, read_scalars  # noqa: E402

pytestmark = pytest.mark.slow

START_DIR = FIXTURES / "demo_start"  # tokenizer + warm-started model, float32
WARM_START = ["model.warmstart_steps=800", "model.warmstart_lr=5e-3", "model.warmstart_batch_size=64"]  # how it was made
SEEDS = (0, 1, 2)  # GRPO runs (rollout sampling, question order) from the stored start
STEPS = 60
# Held-out greedy accuracy gains (150 questions: 1 question = 0.67 points) of seeds 0, 1, 2 from the stored start
# (30.7%), 60 GRPO steps, measured on one machine (AMD EPYC, 2 cores) with ATEN_CPU_CAPABILITY unset (AVX-512
# kernels) and with ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 (the same gains on both):
#   full, lr 5e-5:        +5.3 +4.7 +6.0 points (mean +5.3)   (lr 1e-4: +3.3 +4.0 +6.7; lr 1e-3: the reward fell)
#   LoRA r=8 + ckpt, 1e-3: +6.0 +2.7 +4.7 points (mean +4.4)   (lr 3e-3: +0.7 +2.0 +0.7)
# Asked for: a mean gain of at least MIN_MEAN_GAIN over the seeds (less than half the smallest mean measured), and
# no more than one seed without a gain. A run that does not update the policy gains exactly 0.
MIN_MEAN_GAIN = 0.02


def demo_parts(root: Path) -> Path:
    return write_demo_parts(root / "parts", train_size=3000, test_size=150, num_ops=1, max_operand=50, seed=0)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    return demo_parts(root), root


def overrides(parts: Path, root: Path, model: Path, extra: list[str], seed: int, steps: int = STEPS) -> list[str]:
    return [
        "model=hf", f"model.name_or_path={model}", f"model.cache_dir={root / 'cache'}",
        "task=dataset", f"task.path={parts / 'data' / 'train.parquet'}", f"task.heldout_path={parts / 'data' / 'test.parquet'}",
        "task.solution_column=solution", "prompt=chat", "reward=math",
        f"grpo.steps={steps}", "grpo.prompts_per_step=16", "grpo.group_size=8", "sampling.max_new_tokens=24",
        "eval.prompts=150", "eval.batch_size=150", "eval.k=0", "eval.every_n_steps=100", f"seed={seed}",
        *extra,
    ]


def real_run(demo, name: str, extra: list[str], seed: int, steps: int = STEPS) -> dict[str, float]:
    parts, root = demo
    out = root / f"{name}-{seed}"
    run(compose_config(overrides(parts, root, START_DIR, extra, seed, steps), output_dir=out))
    scalars = read_scalars(out / "tb")
    return {tag: values[-1][1] for tag, values in scalars.items()}


def gains(logged: list[dict[str, float]]) -> list[float]:
    return [run_["final/accuracy"] - run_["initial/accuracy"] for run_ in logged]


def assert_learns(logged: list[dict[str, float]]) -> None:
    got = gains(logged)
    assert sum(got) / len(got) >= MIN_MEAN_GAIN - 1e-6, f"held-out accuracy gains {got}: mean below {MIN_MEAN_GAIN}"
    assert sum(g <= 0 for g in got) <= 1, f"held-out accuracy gains {got}: more than one seed without a gain"


@contextmanager
def counting_forwards():
    """{module class name: forward calls} of every module while inside (a global forward hook)."""
    counts = Counter()
    handle = torch.nn.modules.module.register_module_forward_hook(lambda module, args, output: counts.update([type(module).__name__]))
    try:
        yield counts
    finally:
        handle.remove()


FULL = ["optimizer.lr=5e-5"]
LORA = ["adapter=lora", "adapter.r=8", "adapter.alpha=16", "model.gradient_checkpointing=true", "optimizer.lr=1e-3"]


def test_full_fine_tuning_raises_heldout_accuracy(demo):
    logged = [real_run(demo, "full", FULL, seed) for seed in SEEDS]
    assert_learns(logged)
    assert all("rollout/reward/correct" in r and "rollout/reward/format" in r for r in logged)  # each component logged


def test_lora_with_gradient_checkpointing_raises_heldout_accuracy(demo):
    logged = []
    for seed in SEEDS:
        with counting_forwards() as calls:
            logged.append(real_run(demo, "lora", LORA, seed))
        # every forward of the model calls each layer's attention once; checkpointing calls it again in the backward
        recomputed = calls["Qwen2Attention"] - 2 * calls["Qwen2Model"]  # the demo model has 2 layers
        assert recomputed > 0, f"model.gradient_checkpointing=true recomputed nothing: {dict(calls)}"
    assert_learns(logged)


def record_start(root: Path) -> None:
    """Rewrite START_DIR: the demo parts' model after its supervised warm start (model=hf's own option), float32."""
    from grpo.pipeline import load_policy

    parts = demo_parts(root)
    cfg = compose_config(overrides(parts, root, parts / "model", WARM_START, 0), output_dir=root / "compose")
    _, policy, tokenizer = load_policy(cfg)
    policy.save_pretrained(START_DIR)
    tokenizer.save_pretrained(START_DIR)


if __name__ == "__main__":  # --record-start | --measure NAME SEED STEPS [override ...]: one run's accuracies as JSON
    import json
    import tempfile

    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp())
    if "--record-start" in sys.argv:
        record_start(tmp)
        print(f"wrote {START_DIR}")
    elif "--measure" in sys.argv:  # --measure NAME SEED STEPS [override ...]
        name, seed, steps, *extra = sys.argv[sys.argv.index("--measure") + 1:]
        logged = real_run((demo_parts(tmp), tmp), name, {"full": FULL, "lora": LORA}[name] + extra, int(seed), int(steps))
        print(json.dumps({"name": name, "seed": int(seed), "steps": int(steps), "extra": extra,
                          "initial": logged["initial/accuracy"], "final": logged["final/accuracy"]}))
