"""Process supervision from a final-answer verifier alone, end to end on a CPU: task=arithmetic_lines (one step per
line), its PRM trained on Monte-Carlo step labels (step_labels=mc, steps=line) and retrained online on MC labels of
the current policy's samples (rm_schedule=online), GRPO with the PRM's step rewards.

What is checked: the labels follow the endings rules (an ended completion's final step is its verifier's verdict,
a cut tail is 0); the rollout's step rewards are the PRM's scores at the step ends (the completion's ending seen),
and the advantages the update uses are the estimator's of exactly those; the gauge is logged."""

from __future__ import annotations

import json
import math

import pytest
import torch

from grpo.pipeline import build, run
from grpo.rewards.combine import learned_component
from grpo.rewards.learned.endings import is_cut_tail, is_final
from grpo.tasks.base import verified
from grpo_testkit import compose_config, read_scalars

TINY = [
    "debug=default", "task=arithmetic_lines", "reward=model", "supervision=process", "step_labels=mc",
    "task.num_ops_max=2", "task.max_operand=20", "task.train_size=2000", "task.heldout_size=50",  # debug's easy problems
    "step_labels.n=2", "step_labels.max_new_tokens=12", "sampling.max_new_tokens=20",  # some completions are cut
    "reward.initial_prompts=8", "reward.samples_per_prompt=2", "reward.initial_steps=5", "reward.batch_size=8",
    "rm_schedule=online", "rm_schedule.rm_steps=3", "rm_schedule.rm_batch_size=8",
    "eval.prompts=8", "eval.batch_size=8", "eval.k_prompts=2", "warmstart.steps=40",  # finite losses, not accuracy
]


def test_debug_run_with_a_prm_on_monte_carlo_labels(tmp_path):
    cache = tmp_path / "cache"
    cfg = compose_config(TINY + [f"model.cache_dir={cache}", f"reward.cache_dir={cache}"], output_dir=tmp_path / "run")
    run(cfg)
    scalars = read_scalars(tmp_path / "run" / "tb")
    assert len(scalars["train/loss"]) == 2 and all(math.isfinite(v) for _, v in scalars["train/loss"])
    assert len(scalars["rm/train_time_s"]) == 2  # the PRM was retrained after each step, on MC labels
    assert all(0 <= v <= 1 for _, v in scalars["rollout/answer_rate"]) and len(scalars["rollout/gauge/auroc"]) == 2
    assert all(v >= 1 for _, v in scalars["rollout/steps_per_completion"])

    # the initial PRM's labels: the final step of an ended completion is its verdict, a cut tail is 0
    (rm_dir,) = [p for p in cache.iterdir() if p.name.startswith("reward-prm-") and p.is_dir()]
    saved = json.loads((rm_dir / "examples.json").read_text())
    module, _, _ = build(cfg)  # the cached warm start and PRM
    task = module.task
    problems = {p.prompt: p for p in task.train_problems()}
    finals = {"ended": 0, "cut": 0}
    for prompt, completion, targets, ended in saved["train"] + saved["heldout"]:
        end, label = targets[-1]
        if is_cut_tail(completion, end, ended):
            assert label == 0.0
            finals["cut"] += 1
        elif ended and is_final(completion, end):
            assert label == float(verified(task, problems[prompt], completion)), (completion, targets)
            finals["ended"] += 1
    assert finals["ended"] > 0  # (the other case occurs too with max_new_tokens=20, but not on every machine's kernels)

    # the rollout's step rewards are the PRM's scores, and the advantages are the estimator's of them
    rollout, reward = module.rollout, learned_component(module.rollout.reward)
    seen = {}
    estimator = rollout.advantages

    def spy(rewards, group_size, step_rewards=None, step_end_mask=None):
        seen.update(step_rewards=step_rewards, step_end_mask=step_end_mask)
        seen["advantages"] = estimator(rewards, group_size, step_rewards, step_end_mask)
        return seen["advantages"]

    spy.needs_step_rewards = estimator.needs_step_rewards
    rollout.advantages = spy
    questions = task.train_problems()[:4]
    out = rollout(module.policy, module.reference, questions, generator=torch.Generator().manual_seed(0))
    problems_, texts, _ = zip(*out.samples)
    prm = reward.steps(list(problems_), list(texts), out.ended)  # the PRM's own scores, with the endings the rollout had
    for i, row in enumerate(prm):
        given = seen["step_rewards"][i][seen["step_end_mask"][i]].tolist()
        assert len(given) == len(row), (texts[i], row, given)
        assert given == pytest.approx([v for _, v in row], abs=1e-6), (texts[i], row, given)
    assert torch.equal(out.batch.advantages.cpu(), seen["advantages"].cpu())  # the update's advantages are these
    assert (seen["advantages"] != 0).any()  # the PRM's scores differ: there is something to learn
