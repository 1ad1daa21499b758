"""RLOO (Ahmadian et al., arXiv 2402.14740): the leave-one-out baseline, supervision=rloo.

    A_i = r_i - 1/(G-1) * sum_{j != i} r_j  =  G/(G-1) * (r_i - mean(r_group))

Each output is compared with the mean of the other G-1 outputs of its group: an unbiased baseline
(it does not depend on r_i). The paper scales nothing (grpo.scale_rewards=false, conf/supervision/rloo.yaml's
default); scale="group" / "batch" divides A by (std of the group's / of all rewards + eps), as GRPO does
(grpo.scale_rewards, grpo.adv_eps). Every token of output i gets A_i; a group whose rewards are all
equal, or span less than min_spread (grpo.min_spread), gets exactly 0.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from grpo.algo.advantages import check_min_spread, is_flat, scale_name


def rloo_advantages(rewards: Tensor, group_size: int, scale: bool | str = False, eps: float = 1e-4,
                    min_spread: float = 0.0) -> Tensor:
    """rewards [N] (N = prompts * group_size, each group contiguous) -> advantages [N], float32 at least.

        A_i = r_i - mean of the group's other rewards                    (scale=False or "none", the paper)
        A_i = (r_i - mean of the others) / (std(r_group) + eps)          (scale=True or "group")
        A_i = (r_i - mean of the others) / (std(r_all) + eps)            (scale="batch")
    std is the sample std (Bessel), as outcome_advantages."""
    if rewards.dim() != 1 or group_size < 2 or rewards.shape[0] % group_size:
        raise ValueError(f"rewards must be [N] with N a multiple of group_size >= 2, got {tuple(rewards.shape)}, G={group_size}")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    r = rewards.to(torch.promote_types(rewards.dtype, torch.float32)).view(-1, group_size)  # [P, G]
    others = (r.sum(dim=1, keepdim=True) - r) / (group_size - 1)  # [P, G] mean of the other outputs
    advantages = r - others  # [P, G]
    std = {"group": lambda: r.std(dim=1, keepdim=True), "batch": lambda: r.std(), "none": lambda: None}[scale_name(scale)]()
    if std is not None:
        advantages = advantages / (std + eps)
    flat = is_flat(r.amax(dim=1, keepdim=True) - r.amin(dim=1, keepdim=True), min_spread)  # [P, 1]
    return torch.where(flat, torch.zeros_like(r), advantages).view(-1)


class RLOOAdvantages:
    """supervision=rloo: `rloo_advantages`; scale: grpo.scale_rewards (false: none, the paper), eps: grpo.adv_eps
    (added to the std when scaling)."""

    needs_step_rewards: ClassVar[bool] = False

    def __init__(self, scale: bool | str = False, eps: float = 1e-4, min_spread: float = 0.0):
        scale_name(scale)  # an unknown value fails here, before any run starts
        check_min_spread(min_spread)
        self.scale, self.eps, self.min_spread = scale, eps, min_spread

    def __call__(self, rewards, group_size, step_rewards=None, step_end_mask=None) -> Tensor:
        return rloo_advantages(rewards, group_size, scale=self.scale, eps=self.eps, min_spread=self.min_spread)
