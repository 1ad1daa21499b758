"""Pass@k advantages (Chen et al. 2025, "Pass@k Training for Adaptively Balancing Exploration and Exploitation
of Large Reasoning Models", arXiv 2508.10751, its analytic form for binary rewards, eqs. 14-15): the advantage
that trains pass@k (some one of k samples right) instead of pass@1.

A group of N = G outputs, N_neg of them wrong (reward 0), the rest right (reward 1); C(a, b) = a choose b:
    R_mean = 1 - C(N_neg, k) / C(N, k)                 the group's pass@k (over its k-subsets)
    sigma  = sqrt(R_mean (1 - R_mean))
    A_pos  = (1 - R_mean) / sigma                      every right output
    A_neg  = (1 - R_mean - C(N_neg - 1, k - 1) / C(N - 1, k - 1)) / sigma    every wrong output
k = 1 gives GRPO's outcome advantages (population std); k < G is required (with k = G any right answer makes
R_mean = 1, so every group would get 0). A group with fewer than k wrong outputs already passes every
k-subset: R_mean = 1, advantage 0; so does a group all right or all wrong, and one whose rewards
span less than grpo.min_spread. Rewards must be 0 or 1 (a verifier's): anything else is an error.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor

from grpo.algo.advantages import check_min_spread, is_flat


def passk_table(group_size: int, k: int) -> tuple[Tensor, Tensor]:
    """(A_pos, A_neg) [G + 1] float64, indexed by N_neg = 0..G (0 where sigma = 0)."""
    a_pos, a_neg = torch.zeros(group_size + 1, dtype=torch.float64), torch.zeros(group_size + 1, dtype=torch.float64)
    for n_neg in range(group_size + 1):
        r_mean = 1 - math.comb(n_neg, k) / math.comb(group_size, k)
        sigma = math.sqrt(r_mean * (1 - r_mean))
        if sigma > 0:
            a_pos[n_neg] = (1 - r_mean) / sigma
            a_neg[n_neg] = (1 - r_mean - math.comb(n_neg - 1, k - 1) / math.comb(group_size - 1, k - 1)) / sigma
    return a_pos, a_neg


def passk_advantages(rewards: Tensor, group_size: int, k: int, min_spread: float = 0.0) -> Tensor:
    """rewards [N] (N = prompts * group_size, each group contiguous), each 0 or 1 -> advantages [N] float32 at least."""
    if rewards.dim() != 1 or group_size < 2 or rewards.shape[0] % group_size:
        raise ValueError(f"rewards must be [N] with N a multiple of group_size >= 2, got {tuple(rewards.shape)}, G={group_size}")
    if not 1 <= k < group_size:
        raise ValueError(f"supervision=passk needs 1 <= advantage.k < grpo.group_size (k = G gives every group advantage 0: "
                         f"any right answer passes), got k={k}, G={group_size}")
    if not ((rewards == 0) | (rewards == 1)).all():
        raise ValueError("supervision=passk needs binary rewards (0 or 1), got "
                         f"{sorted(set(rewards.tolist()) - {0.0, 1.0})[:5]}: use a verifier reward (reward=verifier)")
    check_min_spread(min_spread)
    r = rewards.view(-1, group_size)  # [P, G]
    right = r == 1
    n_neg = (~right).sum(dim=1)  # [P]
    a_pos, a_neg = (t.to(rewards.device) for t in passk_table(group_size, k))
    adv = torch.where(right, a_pos[n_neg][:, None], a_neg[n_neg][:, None])  # [P, G]
    spread = (r.max(dim=1, keepdim=True).values - r.min(dim=1, keepdim=True).values).float()  # [P, 1]
    adv = torch.where(is_flat(spread, min_spread), torch.zeros_like(adv), adv)
    return adv.to(torch.promote_types(rewards.dtype, torch.float32)).view(-1)


class PassKAdvantages:
    """supervision=passk: `k` the pass@k trained; `min_spread` grpo.min_spread."""

    needs_step_rewards: ClassVar[bool] = False

    def __init__(self, k: int = 4, min_spread: float = 0.0):
        if k < 1:
            raise ValueError(f"advantage.k must be >= 1, got {k}")
        check_min_spread(min_spread)
        self.k, self.min_spread = k, min_spread

    def __call__(self, rewards, group_size, step_rewards=None, step_end_mask=None) -> Tensor:
        return passk_advantages(rewards, group_size, self.k, self.min_spread)
