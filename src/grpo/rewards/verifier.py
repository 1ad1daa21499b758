"""Rewards from the task's own checker: final answer right (outcome) or each step right (process)."""

from __future__ import annotations

import torch
from torch import Tensor

from grpo.tasks.base import verified


class VerifierReward:
    """Outcome reward 1.0 / 0.0 from `task.verify`; step rewards from `task.step_rewards` (reward=verifier, or a
    component of a weighted reward: the task's checker as the outcome one, its step checker as the process one)."""

    name = "verifier"  # rollout/reward/verifier

    def __init__(self, task=None):
        self.task = task

    def bind(self, task, policy=None, tokenizer=None) -> "VerifierReward":
        """Attach the task (reward sources that learn also get the starting policy and its tokenizer)."""
        self.task = task
        return self

    def outcome(self, problems, completions: list[str]) -> Tensor:
        """[N] float rewards, one per completion."""
        return torch.tensor([float(verified(self.task, p, c)) for p, c in zip(problems, completions)])

    def steps(self, problems, completions: list[str]) -> list[list[tuple[int, float]]]:
        """Per completion: (index of the step's last character in the completion text, reward) per step."""
        return [self.task.step_rewards(p, c) for p, c in zip(problems, completions)]
