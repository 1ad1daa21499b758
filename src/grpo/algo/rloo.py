"""RLOO (Ahmadian et al., arXiv 2402.14740): the leave-one-out baseline, supervision=rloo.

    A_i = r_i - 1/(G-1) * sum_{j != i} r_j  =  G/(G-1) * (r_i - mean(r_group))

Each output is compared with the mean of the other G-1 outputs of its group: an unbiased baseline
(it does not depend on r_i), no std scaling. Every token of output i gets A_i; a group whose rewards
are all equal gets exactly 0.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor


def rloo_advantages(rewards: Tensor, group_size: int) -> Tensor:
    """rewards [N] (N = prompts * group_size, each group contiguous) -> advantages [N], float32 at least."""
    if rewards.dim() != 1 or group_size < 2 or rewards.shape[0] % group_size:
        raise ValueError(f"rewards must be [N] with N a multiple of group_size >= 2, got {tuple(rewards.shape)}, G={group_size}")
    r = rewards.to(torch.promote_types(rewards.dtype, torch.float32)).view(-1, group_size)  # [P, G]
    others = (r.sum(dim=1, keepdim=True) - r) / (group_size - 1)  # [P, G] mean of the other outputs
    constant = (r == r[:, :1]).all(dim=1, keepdim=True)
    return torch.where(constant, torch.zeros_like(r), r - others).view(-1)


class RLOOAdvantages:
    needs_step_rewards: ClassVar[bool] = False

    def __call__(self, rewards, group_size, step_rewards=None, step_end_mask=None) -> Tensor:
        return rloo_advantages(rewards, group_size)
