"""GDPO: group reward-decoupled normalisation for several rewards (Liu et al., "GDPO: Group reward-Decoupled
Normalization Policy Optimization for Multi-reward RL Optimization", arXiv 2601.05242).

GRPO normalises the weighted sum r_i = sum_k w_k r_k,i inside its group, so different mixes of the components can
land on the same advantage (with two 0/1 rewards, (1, 0) and (0, 1) tie). GDPO normalises each component in its
group first, sums them with their weights, and normalises the sum over the batch:

    A_k,i = (r_k,i - mean_group(r_k)) / (std_group(r_k) + eps)     each component k (grpo.scale_rewards as GRPO:
                                                                    group / batch: the std of all its values / none)
    S_i   = sum_k w_k A_k,i                                         w_k = reward.components.<k>.weight
    A_i   = S_i / (std_batch(S) + eps)                              batch_norm=true (the paper); false: A_i = S_i

The batch mean of S is 0 (each group's A_k sums to 0), so the paper's batch-wise centring is left out: a group
with no spread in any component keeps advantage exactly 0. A component that abstained (None) on a completion
is left out of its group's mean and std and adds 0 there; one with fewer than two values in a group, or whose
values in the group span less than min_spread (grpo.min_spread), adds 0 to the whole group. Stds are sample
stds (Bessel), as in GRPO here.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from grpo.algo.advantages import _check_groups, check_min_spread, is_flat, masked_spread, masked_std, scale_name


def gdpo_advantages(components: Tensor, weights: Tensor, group_size: int, scale: bool | str = True, eps: float = 1e-4,
                    min_spread: float = 0.0, batch_norm: bool = True) -> Tensor:
    """components [K, N] (NaN where a component abstained), weights [K] -> advantages [N] (float32 at least).

    N = prompts * group_size, each prompt's group contiguous.
    """
    if components.dim() != 2 or weights.shape != components.shape[:1]:
        raise ValueError(f"components must be [K, N] and weights [K], got {tuple(components.shape)} and {tuple(weights.shape)}")
    K, N = components.shape
    _check_groups(N, group_size, eps)
    check_min_spread(min_spread)
    how = scale_name(scale)
    r = components.to(torch.promote_types(components.dtype, torch.float32)).reshape(K * N // group_size, group_size)  # [K*P, G]
    given = ~torch.isnan(r)
    r = torch.where(given, r, torch.zeros_like(r))
    count = given.sum(dim=1, keepdim=True)
    mean = r.sum(dim=1, keepdim=True) / count.clamp(min=1)  # [K*P, 1]
    centered = r - mean
    if how == "batch":  # each component's std over all its values in the batch
        std = torch.stack([masked_std(x, v, "batch") for x, v in zip(r.view(K, -1), given.view(K, -1))])  # [K]
        std = std.repeat_interleave(N // group_size)[:, None]
    else:
        std = masked_std(r, given, how)  # [K*P, 1] or None
    if std is not None:
        centered = centered / (std + eps)
    flat = is_flat(masked_spread(r, given), min_spread) | (count < 2)  # [K*P, 1]
    per_component = torch.where(given & ~flat, centered, torch.zeros_like(centered)).view(K, N)  # [K, N]
    summed = (weights.to(per_component.dtype)[:, None] * per_component).sum(0)  # [N]
    if batch_norm and N > 1:
        summed = summed / (summed.std() + eps)
    return summed


class GDPOAdvantages:
    """supervision=gdpo: `gdpo_advantages` of the reward's components (`needs_components`: the rollout passes
    components={name: (weight, values [N], NaN = abstained)}). scale: grpo.scale_rewards; min_spread:
    grpo.min_spread; batch_norm: the paper's batch-wise normalisation of the weighted sum."""

    needs_step_rewards: ClassVar[bool] = False
    needs_components: ClassVar[bool] = True

    def __init__(self, scale: bool | str = True, eps: float = 1e-4, min_spread: float = 0.0, batch_norm: bool = True):
        scale_name(scale)
        check_min_spread(min_spread)
        self.scale, self.eps, self.min_spread, self.batch_norm = scale, eps, min_spread, bool(batch_norm)

    def __call__(self, rewards, group_size, step_rewards=None, step_end_mask=None, components=None) -> Tensor:
        if not components:
            raise ValueError("supervision=gdpo needs the reward's components (components={name: (weight, values)}): "
                             "the rollout passes them to an estimator with needs_components")
        weights = torch.tensor([float(w) for w, _ in components.values()], dtype=torch.float64)
        values = torch.stack([torch.as_tensor(v, dtype=torch.float64) for _, v in components.values()])  # [K, N]
        adv = gdpo_advantages(values, weights, group_size, scale=self.scale, eps=self.eps, min_spread=self.min_spread,
                              batch_norm=self.batch_norm)
        return adv.float()
