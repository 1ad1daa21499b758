"""Which groups each policy update of a GRPO step trains on: mu passes of mini-batches of whole groups."""

from __future__ import annotations

import torch
from torch import Tensor


def minibatch_plan(num_groups: int, minibatch_groups: int, mu: int, seed: int) -> list[Tensor]:
    """Group indices (sorted, long) of each of the step's mu * (num_groups // minibatch_groups) updates.

    Groups are shuffled between passes with a seeded generator (so a resumed run replays the same
    order); a group is never split, so every group's normalisation stays as computed. With one
    mini-batch per pass every update sees all groups, in order.
    """
    if minibatch_groups < 1 or num_groups % minibatch_groups:
        raise ValueError(f"{minibatch_groups} groups per mini-batch do not divide the step's {num_groups} groups")
    num_minibatches = num_groups // minibatch_groups
    generator = torch.Generator().manual_seed(seed)
    plan = []
    for _ in range(mu):
        order = torch.randperm(num_groups, generator=generator) if num_minibatches > 1 else torch.arange(num_groups)
        plan += [chunk.sort().values for chunk in order.view(num_minibatches, minibatch_groups)]
    return plan


def group_rows(groups: Tensor, group_size: int) -> Tensor:
    """Row indices [len(groups) * G] of `groups` in a rollout laid out group by group (sorted if groups are)."""
    return (groups[:, None] * group_size + torch.arange(group_size)).flatten()
