"""grpo.rollout.gauge: the over-optimisation gauge's statistics, worked by hand."""

import math

import pytest
import torch

from grpo.rewards.combine import WeightedRewards
from grpo.rollout.gauge import auroc, gauged_name, rollout_gauge, score_gap
from grpo.tasks import ArithmeticTask, Problem

TASK = ArithmeticTask(train_size=10, heldout_size=10)
P = Problem("Q:12+5-3=", "14", "12+5=17;17-3=14;A:14")


def test_auroc_and_score_gap():
    # right: 0.9, 0.5; wrong: 0.2, 0.5. Pairs: 0.9>0.2, 0.9>0.5, 0.5>0.2 (1 each), 0.5=0.5 (1/2): 3.5 / 4
    assert auroc([0.9, 0.2, 0.5, 0.5], [True, False, True, False]) == 0.875
    assert score_gap([0.9, 0.2, 0.5, 0.5], [True, False, True, False]) == pytest.approx(0.7 - 0.35)  # (0.9+0.5)/2 - (0.2+0.5)/2
    assert auroc([0.1, 0.9], [True, False]) == 0.0  # the reward prefers the wrong answer
    assert math.isnan(auroc([0.3, 0.4], [True, True])) and math.isnan(score_gap([0.3], [False]))


class Learned:
    """Stands in for the reward model: it has `retrain`, steps and an outcome."""

    def retrain(self, *args, **kwargs): ...

    def outcome(self, problems, completions):
        return [0.0] * len(completions)

    def steps(self, problems, completions):
        return [[(0, 0.8), (len(t) - 1, 0.3 if "15" in t else 0.9)] for t in completions]


def test_the_gauge_reads_the_learned_component_beside_the_verifier():
    reward = WeightedRewards({"model": {"fn": Learned()}, "verifier": {"fn": lambda p, c: [1.0] * len(c), "weight": 5.0}})
    assert gauged_name(reward) == "model" and gauged_name(WeightedRewards({"v": {"fn": lambda p, c: [0.0] * len(c)}})) is None
    texts = ["12+5=17;17-3=14;A:14", "12+5=18;18-3=15;A:15", "12+5=17;17-3=14;", "12+5=18;18-3=15;A:15"]
    correct = torch.tensor([1.0, 0.0, 0.0, 0.0])
    scores = reward.score([P] * 4, texts, process=True)
    stats = rollout_gauge(TASK, texts, correct, [scores], "model", process=True)
    # the model's lowest step per row: 0.8, 0.3, 0.8, 0.3 (the verifier's +5 on row 0's last step is not gauged)
    # right 0.8 vs wrong 0.3, 0.8, 0.3: 1 + 1/2 + 1 = 2.5 / 3; gap 0.8 - (1.4 / 3)
    assert stats["gauge/auroc"] == pytest.approx(2.5 / 3)
    assert stats["gauge/score_gap"] == pytest.approx(0.8 - 1.4 / 3)
    assert stats["answer_rate"] == 0.75  # row 2 states no "A:<number>"
    assert stats["steps_per_completion"] == 2.0  # the model's two steps; the verifier's value lands on the last one
    whole = rollout_gauge(TASK, texts, correct, [scores], None, process=True)  # no learned component: the whole reward
    assert whole["gauge/auroc"] == 0.5  # lowest of (0.8, 0.9 + 5), (0.8, 0.3 + 5), ...: 0.8 everywhere, ties
    outcome = rollout_gauge(TASK, texts, correct, [reward.score([P] * 4, texts)], None, process=False)
    assert outcome["gauge/auroc"] == 0.5 and "steps_per_completion" not in outcome  # 5.0 everywhere: ties
