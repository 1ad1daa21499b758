"""Progress rewards (Setlur et al., "Rewarding Progress", arXiv 2410.08146), supervision=process_progress.

The numbers a PRM gives at step ends are read as values: v_i^j estimates the chance that the policy
finishes row i right from the prefix ending with its step j (a soft Monte-Carlo label is exactly that).
Summing values, as supervision=process does, counts the same prospects once per later step. A step's
reward is instead its progress, the change in value it makes; the first step is measured against the
prompt's value v_0:

    p_i^1 = v_i^1 - v_0,    p_i^j = v_i^j - v_i^(j-1)
    v_0   = mean over the group's rows (those with a step) of v_i^1
    A_it  = sum over steps j of row i with index(j) >= t of p_i^j / (std(P) + eps)
          = (v_i^last - v_i^(j(t)-1)) / (std(P) + eps)     j(t): the step that token t belongs to (v_i^0 = v_0)
    P: the progress of every step of the group (scale="batch": of every group given; scale=False or "none":
       no division). A_it = 0 after the row's last step; a row without a step gets 0 and is not in v_0.

The sum telescopes: a token's advantage is the row's final value minus the value of the state its step
starts from, the actor-critic advantage with the reward model as the critic, so steps that leave the value
where it was add nothing, however many there are.

The prompt's value v_0 is the group's mean first-step value. For Monte-Carlo values of the sampling policy
the value of a state is the mean value of the next one (v_0 = E[v^1] over the policy's first steps), so this
estimates v_0 from the very completions of the group, on the same scale as the other values, and it makes
the first steps' progress sum to 0 over the group (GRPO's group baseline, one step in). The mean final
value or mean outcome would need a verifier or lean on the last step's score, where a PRM is weakest
(a completion's last step is labelled by what the policy would write next). The progress is not
re-centred: its baseline is already in v_0 and in each step's previous value, and subtracting a mean per
step would again pay or charge rows by their number of steps.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from grpo.algo.advantages import (
    StepAdvantages, _float32_at_least, check_step_tensors, is_flat, masked_spread, masked_std, scale_name,
)


def step_progress(step_rewards: Tensor, step_end_mask: Tensor, group_size: int) -> Tensor:
    """p [N, T]: at each step end, its value minus the row's previous step's value (the first step: minus v_0,
    the group's mean first-step value); 0 elsewhere. step_rewards, step_end_mask: [N, T]."""
    is_end = step_end_mask.bool()
    r = _float32_at_least(step_rewards)
    v = torch.where(is_end, r, torch.zeros_like(r))  # [N, T] the values at the step ends
    n_rows, T = v.shape
    positions = torch.arange(T, device=v.device).expand(n_rows, T)
    last_end = torch.where(is_end, positions, torch.full_like(positions, -1)).cummax(1).values  # [N, T] latest end <= t
    prev_end = torch.cat([torch.full_like(last_end[:, :1], -1), last_end[:, :-1]], dim=1)  # [N, T] latest end < t
    first = is_end & (prev_end < 0)  # [N, T] each row's first step end
    first_value = (v * first).sum(1).view(-1, group_size)  # [P, G]
    has_step = first.any(1).view(-1, group_size)
    v0 = (first_value * has_step).sum(1, keepdim=True) / has_step.sum(1, keepdim=True).clamp(min=1)  # [P, 1]
    previous = torch.where(prev_end < 0, v0.repeat_interleave(group_size, 0).expand(n_rows, T),
                           v.gather(1, prev_end.clamp(min=0)))  # [N, T]
    return torch.where(is_end, v - previous, torch.zeros_like(v))


def process_progress_advantages(
    step_rewards: Tensor, step_end_mask: Tensor, group_size: int, scale: bool | str = True, eps: float = 1e-4,
    min_spread: float = 0.0,
) -> Tensor:
    """Progress process advantages (see the module docstring).

    step_rewards:  [N, T] float, step j's value v_i^j at the token index(j) where it ends (unmarked entries ignored).
    step_end_mask: [N, T] bool, True at those tokens. Rows prompt-major, each group's G rows contiguous.
    Returns [N, T] (float32, or float64 if step_rewards are). A group whose step values are all equal,
    or span (max - min) less than min_spread (grpo.min_spread), gets 0.
    """
    check_step_tensors(step_rewards, step_end_mask, group_size, eps)
    n_rows, T = step_rewards.shape
    is_end = step_end_mask.bool()
    progress = step_progress(step_rewards, is_end, group_size)  # [N, T]
    ends = is_end.reshape(-1, group_size * T)  # [P, G*T]
    values = _float32_at_least(step_rewards).reshape(-1, group_size * T)
    v = torch.where(ends, values, torch.zeros_like(values))
    flat = is_flat(masked_spread(v, ends), min_spread)  # [P, 1]: all the group's step values equal (or a single one)
    std = masked_std(progress.view(-1, group_size * T), ends, scale_name(scale))  # [P, 1], a scalar (batch) or None
    scaled = progress.view(-1, group_size * T)
    if std is not None:
        scaled = scaled / (std + eps)
    scaled = torch.where(ends & ~flat, scaled, torch.zeros_like(scaled)).view(n_rows, T)
    return scaled.flip(1).cumsum(1).flip(1)  # reverse cumsum: sum over index(j) >= t


class ProcessProgressAdvantages(StepAdvantages):
    """supervision=process_progress: `process_progress_advantages` of the per-step values (scale as ProcessAdvantages)."""

    option: ClassVar[str] = "process_progress"
    estimate: ClassVar = staticmethod(process_progress_advantages)
