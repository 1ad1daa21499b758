"""supervision=gdpo through the rollout: the estimator gets each reward component's values and weight
(GroupRollout._components), so its advantages are gdpo_advantages of them, not GRPO's of the weighted sum."""

from __future__ import annotations

import torch
from hydra.utils import instantiate

from grpo.algo.gdpo import gdpo_advantages
from grpo.rewards.combine import WeightedRewards
from grpo.tasks import ArithmeticTask
from grpo_testkit import compose_config, tiny_lm

TASK = ArithmeticTask(train_size=30, heldout_size=5, seed=4)


def digits(problems, completions):
    return [sum(c.isdigit() for c in t) / max(len(t), 1) for t in completions]


def short(problems, completions):  # abstains on empty completions
    return [None if not t else float(len(t) < 6) for t in completions]


def test_gdpo_rollout_normalises_each_component(tmp_path):
    model, tok = tiny_lm(seed=1)
    reward = WeightedRewards({"digits": {"fn": digits, "weight": 1.0}, "short": {"fn": short, "weight": 0.3}})
    problems = TASK.train_problems()[:3]
    for batch_norm in (True, False):
        cfg = compose_config(["supervision=gdpo", f"advantage.batch_norm={batch_norm}", "grpo.group_size=4",
                              "sampling.max_new_tokens=8"], output_dir=tmp_path)
        rollout = instantiate(cfg.rollout, reward=reward, task=TASK, tokenizer=tok)
        out = rollout(model, None, problems, torch.Generator().manual_seed(0))
        values = torch.tensor([[float("nan") if v is None else v for v in out.components[name]] for name in ("digits", "short")],
                              dtype=torch.float64)
        want = gdpo_advantages(values, torch.tensor([1.0, 0.3]), 4, eps=cfg.grpo.adv_eps, batch_norm=batch_norm).float()
        torch.testing.assert_close(out.batch.advantages, want)
        assert want.abs().sum() > 0  # some group had spread
    rewards = torch.tensor([r for _, _, r in out.samples])  # GRPO's advantages of the weighted sum differ
    assert not torch.allclose(instantiate(compose_config(["grpo.group_size=4"], output_dir=tmp_path).advantage)(rewards, 4),
                              out.batch.advantages, atol=1e-3)
