"""Min-form credit assignment (PURE, Cheng et al., arXiv 2504.15275), supervision=process_min.

A token's return is the minimum of the rewards of the steps ending at or after it (the paper's
V(s_t) = min over t' >= t of r_t'), not their sum:

    G_it = min over steps j of row i with index(j) >= t of r_i^index(j)     (t up to the row's last step end)
    b    = mean over the group's rows i (those with a step) of G_i0        G_i0: the row's worst step reward
    A_it = (G_it - b) / (std(G) + eps)      G: the returns G_i^index(j) at every step end of the group
    A_it = (G_it - b) / (std(G_all) + eps)  (scale="batch": those of every group given)
    A_it =  G_it - b                        (scale=False or "none")
    A_it = 0 after the row's last step; a row without a step gets 0 and is not in b.

With an outcome reward beside the step rewards (reward=prm_verifier: the verifier's 1 / 0), it is a term of
its own, added to the return of every token of the row (PURE's PRM + VR: their outcome reward sits at the
last token and is summed back to every token, while the process rewards go through the min):

    G_it = min over steps j of row i with index(j) >= t of r_i^index(j)  +  o_i      (o_i: the row's outcome)

and the baseline and scale are those of these returns. Putting o_i on the last step instead would let the
min discard it whenever a step before scored lower, which is most of the time for a wrong answer whose
mistake the PRM saw, and always for a right answer the PRM doubts: the verifier would be cut off.

Decoupled (outcome_scale set: group, batch or none): each reward gets its own advantage and the two are added,
as PRIME does (arXiv 2502.01456: the outcome's and the process rewards' returns, each with its own leave-one-out
baseline, summed) and as GDPO normalises each reward on its own (arXiv 2601.05242):

    A_it = w_s * A_it^min  +  w_o * (o_i - mean_group(o)) / (std(o) + eps)      (std per outcome_scale; none: no division)

A^min: the min-form advantage above of the step rewards alone (scale, min_spread as above); the outcome's
advantage is GRPO's outcome advantage (its group flat below min_spread) on every token of the row. w_s, w_o: the
total weight of the step and of the outcome components (reward.components.<k>.weight); a std division cancels a
weight, so a scaled term is multiplied back by |w| (unscaled, the weight is already in). Joint, the returns'
one std holds the PRM's spread and the outcome's together, so the verifier's advantages come out smaller than
GRPO's own (the verifier-only run's); decoupled, the verifier's term is exactly the verifier-only run's and the
PRM's is added to it.

A row can no longer gain by adding steps a reward model likes: a step scoring at least the row's worst
step changes neither the row's return G_i0 nor the baseline, whereas under the sum (supervision=process)
every such step adds its normalised reward to all the tokens before it.

Baseline and normalisation, and where they depart from PURE's code (github.com/CJReinforce/PURE,
`turn_process_reward_logits_to_reward` and `process_experiences`): PURE approximates the min by
reweighting each step reward with softmax(-r / 0.1) over all the row's steps and then summing from t on,
with an RLOO baseline (the other rows' mean return, per step or scaled by the step's token count) and no
std. Here the min is exact (the temperature's limit 0) and taken over the steps at or after t, as the
paper defines the return (PURE's softmax runs over the whole row, so tokens after the worst step get a
return near 0 there; here they get the minimum of what follows). The baseline is GRPO's: the group's mean
return, where a row's return is its min-form return G_i0 (how a PRM ranks whole solutions at test time),
i.e. the same estimate of the prompt's value as PURE's other-rows mean with the row itself included. It is
not process's mean of all step rewards: a row's minimum lies at or below its mean step reward, so that
baseline would push every row down alike, by more the more steps it has. The scale is the sample std of
every return a token of the group takes (one per step end), not of the G row returns alone: rows can share
their worst step and differ after it (returns [0, 1] and [0, 0]), where the row std is 0 and eps alone
would divide the later tokens' advantages. scale="none" is the closest to PURE's unscaled RLOO.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from grpo.algo.advantages import (
    StepAdvantages, _float32_at_least, check_step_tensors, is_flat, masked_spread, masked_std, outcome_advantages,
    scale_name,
)


def min_form_returns(step_rewards: Tensor, step_end_mask: Tensor) -> tuple[Tensor, Tensor]:
    """G [N, T]: the minimum of the marked rewards at or after t, and alive [N, T] bool: a step ends at or after t.

    G is 0 where no step ends at or after t (after the row's last step, or a row without steps).
    """
    is_end = step_end_mask.bool()
    r = _float32_at_least(step_rewards)
    later = torch.where(is_end, r, torch.full_like(r, torch.inf)).flip(1).cummin(1).values.flip(1)  # [N, T]
    alive = is_end.flip(1).cumsum(1).flip(1) > 0  # [N, T]
    return torch.where(alive, later, torch.zeros_like(later)), alive


def process_min_advantages(
    step_rewards: Tensor, step_end_mask: Tensor, group_size: int, scale: bool | str = True, eps: float = 1e-4,
    min_spread: float = 0.0, outcome: Tensor | None = None, outcome_scale: bool | str | None = None,
    weights: tuple[float, float] = (1.0, 1.0),
) -> Tensor:
    """Min-form process advantages (see the module docstring).

    step_rewards:  [N, T] float, step j's reward at the token index(j) where it ends (unmarked entries ignored).
    step_end_mask: [N, T] bool, True at those tokens. Rows prompt-major, each group's G rows contiguous.
    outcome:       [N] float or None: each row's outcome reward, added to every return of the row (a row
                   without a step still gets 0).
    outcome_scale: None: the outcome is a term of the return (joint). group / batch / none (or True / False):
                   decoupled, the outcome's own GRPO advantage, so scaled, added on every token of each row.
    weights:       (w_s, w_o), decoupled only: the total weight of the step components and of the outcome ones
                   (already in step_rewards and outcome), put back on a term whose std division cancelled it.
    Returns [N, T] (float32, or float64 if step_rewards are). A group whose step rewards are all equal,
    or span (max - min) less than min_spread (grpo.min_spread), and whose outcomes do too, gets 0.
    """
    check_step_tensors(step_rewards, step_end_mask, group_size, eps)
    if outcome_scale is not None:
        if outcome is None:
            raise ValueError("outcome_scale (decoupled) needs the outcome rewards [N] beside the step rewards")
        return _decoupled(step_rewards, step_end_mask, group_size, scale, eps, min_spread, outcome, outcome_scale, weights)
    n_rows, T = step_rewards.shape
    is_end = step_end_mask.bool()
    returns, alive = min_form_returns(step_rewards, is_end)  # [N, T]
    if outcome is not None:
        if outcome.shape != (n_rows,):
            raise ValueError(f"outcome must be [N] = [{n_rows}], one reward per row; got {tuple(outcome.shape)}")
        returns = torch.where(alive, returns + outcome.to(returns)[:, None], returns)
    has_step = alive[:, 0].view(-1, group_size)  # [P, G] rows with at least one step
    row_return = returns[:, 0].view(-1, group_size)  # [P, G] G_i0 = the row's worst step
    baseline = (row_return * has_step).sum(1, keepdim=True) / has_step.sum(1, keepdim=True).clamp(min=1)  # [P, 1]

    at_ends = returns.reshape(-1, group_size * T)  # [P, G*T] the returns, read at the step ends
    ends = is_end.reshape(-1, group_size * T)
    r = torch.where(ends, _float32_at_least(step_rewards).reshape(-1, group_size * T), torch.zeros_like(at_ends))
    flat = is_flat(masked_spread(r, ends), min_spread)  # [P, 1]: all the group's step rewards equal (or a single one)
    if outcome is not None:  # ... and all its outcomes
        flat = flat & is_flat(masked_spread(outcome.to(r).view(-1, group_size), has_step), min_spread)
    std = masked_std(at_ends, ends, scale_name(scale))  # [P, 1], a scalar (batch) or None

    centred = returns.view(-1, group_size, T) - baseline[:, :, None]  # [P, G, T]
    if std is not None:
        centred = centred / ((std[:, :, None] if std.dim() else std) + eps)
    keep = alive.view(-1, group_size, T) & ~flat[:, :, None]
    return torch.where(keep, centred, torch.zeros_like(centred)).view(n_rows, T)


def _decoupled(step_rewards: Tensor, step_end_mask: Tensor, group_size: int, scale, eps: float, min_spread: float,
               outcome: Tensor, outcome_scale, weights: tuple[float, float]) -> Tensor:
    """w_s * A^min (the step rewards alone) + w_o * A^outcome [N] on every token of the row -> [N, T]."""
    n_rows, T = step_rewards.shape
    if outcome.shape != (n_rows,):
        raise ValueError(f"outcome must be [N] = [{n_rows}], one reward per row; got {tuple(outcome.shape)}")
    w_steps, w_outcome = (float(w) for w in weights)
    steps = process_min_advantages(step_rewards, step_end_mask, group_size, scale=scale, eps=eps, min_spread=min_spread)
    final = outcome_advantages(outcome.to(steps), group_size, scale=outcome_scale, eps=eps, min_spread=min_spread)  # [N]
    if scale_name(scale) != "none":
        steps = abs(w_steps) * steps
    if scale_name(outcome_scale) != "none":
        final = abs(w_outcome) * final
    return steps + final[:, None]


class ProcessMinAdvantages(StepAdvantages):
    """supervision=process_min: `process_min_advantages` of the per-step rewards (scale as ProcessAdvantages);
    an outcome-only reward component (the verifier beside a PRM) comes apart, as `outcome`. outcome_scale
    (advantage.outcome_scale): None keeps it a term of the return; group / batch / none gives it its own
    advantage (decoupled), which needs such an outcome (reward=prm_verifier)."""

    option: ClassVar[str] = "process_min"
    outcome_apart: ClassVar[bool] = True
    estimate: ClassVar = staticmethod(process_min_advantages)

    def __init__(self, scale: bool | str = True, eps: float = 1e-4, min_spread: float = 0.0,
                 outcome_scale: bool | str | None = None):
        super().__init__(scale=scale, eps=eps, min_spread=min_spread)
        if outcome_scale is not None:
            scale_name(outcome_scale)
        self.outcome_scale = outcome_scale

    def check_outcome(self, given: bool) -> None:
        """With outcome_scale set, the reward must give an outcome beside its step rewards (`given`): else a clear error
        (the rollout calls this when it is built, with whether the reward has both kinds of component)."""
        if self.outcome_scale is not None and not given:
            raise ValueError(
                f"advantage.outcome_scale={self.outcome_scale!r} gives the verifier's outcome beside a PRM its own advantage, "
                "but this reward has no outcome term apart from step rewards: use reward=prm_verifier (a PRM and the "
                "verifier), or leave advantage.outcome_scale=null")

    def __call__(self, rewards, group_size, step_rewards=None, step_end_mask=None, outcome=None, weights=(1.0, 1.0)):
        if self.outcome_scale is None:
            return super().__call__(rewards, group_size, step_rewards, step_end_mask, outcome=outcome)
        self.check_outcome(outcome is not None)
        if step_rewards is None or step_end_mask is None:
            raise ValueError(f"supervision={self.option} needs step_rewards and step_end_mask [N, T]")
        return process_min_advantages(step_rewards, step_end_mask, group_size, scale=self.scale, eps=self.eps,
                                      min_spread=self.min_spread, outcome=outcome, outcome_scale=self.outcome_scale,
                                      weights=weights)
