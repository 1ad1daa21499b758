"""Serve one rollout as mu passes of mini-batches, each mini-batch made of whole groups."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from grpo.rollout.batch import RolloutBatch


class RolloutMinibatches(Dataset):
    """Item k is a mini-batch (a dict of tensors) of pass k // num_minibatches over the rollout.

    Groups are shuffled between passes with a seeded generator (so a resumed run replays the same
    order); a group is never split, so every group's normalisation stays as computed.
    """

    def __init__(self, rollout: RolloutBatch, group_size: int, minibatch_groups: int, mu: int, seed: int):
        self.rollout, self.group_size, self.mu = rollout, group_size, mu
        num_groups = len(rollout) // group_size
        self.num_minibatches = num_groups // minibatch_groups
        generator = torch.Generator().manual_seed(seed)
        self.index = []  # one row index tensor per item
        for _ in range(mu):
            order = torch.randperm(num_groups, generator=generator) if self.num_minibatches > 1 else torch.arange(num_groups)
            for chunk in order.view(self.num_minibatches, minibatch_groups):
                rows = (chunk[:, None] * group_size + torch.arange(group_size)).flatten()
                self.index.append(rows.sort().values)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, k: int):
        return self.rollout.rows(self.index[k].to(self.rollout.input_ids.device))
