"""Process supervision from a final-answer verifier alone, end to end on a CPU: task=arithmetic_lines (one step per
line), its PRM trained on Monte-Carlo step labels (step_labels=mc, steps=line) and retrained on MC labels of the
current policy's samples (rm_schedule=iterative), GRPO with the PRM's step rewards."""

from __future__ import annotations

import json
import math

from grpo.pipeline import run
from grpo.rollout.segmenters import LineSteps
from grpo_testkit import compose_config, read_scalars

TINY = [
    "debug=default", "task=arithmetic_lines", "reward=model", "supervision=process", "step_labels=mc",
    "task.num_ops_max=2", "task.max_operand=20", "task.train_size=2000", "task.heldout_size=50",  # debug's easy problems
    "step_labels.n=2", "step_labels.max_new_tokens=12",
    "reward.initial_prompts=8", "reward.samples_per_prompt=2", "reward.initial_steps=5", "reward.batch_size=8",
    "rm_schedule=iterative", "rm_schedule.eval_samples=4", "rm_schedule.rm_batch_size=8",
    "eval.prompts=8", "eval.batch_size=8", "eval.k_prompts=2", "warmstart.steps=40",  # finite losses, not accuracy
]


def test_debug_run_with_a_prm_on_monte_carlo_labels(tmp_path):
    cache = tmp_path / "cache"
    cfg = compose_config(TINY + [f"model.cache_dir={cache}", f"reward.cache_dir={cache}"], output_dir=tmp_path / "run")
    run(cfg)
    scalars = read_scalars(tmp_path / "run" / "tb")
    assert len(scalars["train/loss"]) == 2 and all(math.isfinite(v) for _, v in scalars["train/loss"])
    assert all(math.isfinite(v) for _, v in scalars["rollout/reward_mean"])
    assert len(scalars["rm/iteration"]) == 2  # the PRM was retrained after each step, on MC labels

    (rm_dir,) = [p for p in cache.iterdir() if p.name.startswith("reward-prm-") and p.is_dir()]
    saved = json.loads((rm_dir / "examples.json").read_text())
    segment = LineSteps()
    for _, completion, targets in saved["train"] + saved["heldout"]:
        assert [c for c, _ in targets] == segment(completion)[:16]  # MC labels sit on the segmenter's step ends
        assert all(y in (0.0, 0.5, 1.0) for _, y in targets)  # soft labels of n=2 continuations
    cost = saved["label_cost"]
    assert cost["continuations_per_step"] <= 2 and cost["tokens_per_step"] > 0
    assert len(list(cache.glob("mc-labels-*.json"))) >= 3  # the initial set, then each step's fresh samples
