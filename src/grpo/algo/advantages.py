"""Group-relative advantage estimation (DeepSeekMath, arXiv 2402.03300, section 4.1.2-4.1.3).

No value network: the baseline is the group's own mean reward. Rows are laid out prompt-major,
each prompt's `group_size` completions contiguous: row i belongs to group i // group_size.
Math runs in at least float32. A group whose rewards are all equal gets advantage exactly 0
(never NaN, whatever eps), so it contributes no policy gradient; so does one whose rewards span
(max - min) less than min_spread (grpo.min_spread, default 0: a learned reward is never exactly equal
across a group, and the std normalisation would blow its noise up to advantages of +-1).
"""

from __future__ import annotations

from typing import ClassVar, Protocol

import torch
from torch import Tensor


def _check_groups(n_rows: int, group_size: int, eps: float) -> None:
    if group_size < 2:
        raise ValueError(f"group_size must be >= 2 to form a baseline, got {group_size}")
    if n_rows % group_size != 0:
        raise ValueError(f"number of rows {n_rows} is not divisible by group_size {group_size}")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")


def _float32_at_least(x: Tensor) -> Tensor:
    return x.to(torch.promote_types(x.dtype, torch.float32))


# grpo.scale_rewards: what the centred rewards are divided by (True and False are "group" and "none")
SCALES = ("group", "batch", "none")


def scale_name(scale: bool | str) -> str:
    """True -> "group" (the paper), False -> "none" (Dr. GRPO), or one of SCALES as given."""
    name = {True: "group", False: "none"}.get(scale, scale) if isinstance(scale, bool) else scale
    if name not in SCALES:
        raise ValueError(f"scale_rewards={scale!r} is not known; choose true (= group), false (= none) or one of {list(SCALES)}")
    return name


def outcome_advantages(rewards: Tensor, group_size: int, scale: bool | str = True, eps: float = 1e-4,
                       min_spread: float = 0.0) -> Tensor:
    """Outcome supervision: one reward per output, normalised inside its group.

        A_i = (r_i - mean(r_group)) / (std(r_group) + eps)     (scale=True or "group")
        A_i = (r_i - mean(r_group)) / (std(r_all) + eps)       (scale="batch": std of all N rewards given,
                                                                 TRL's scale_rewards="batch")
        A_i =  r_i - mean(r_group)                             (scale=False or "none", Dr. GRPO)

    std is the sample std (Bessel's correction, as `torch.std`). Every token of output i gets A_i.
    A group whose rewards are all equal, or span (max - min) less than min_spread, gets exactly 0.

    rewards: [N], N = prompts * group_size. Returns [N] (float32, or float64 if rewards are).
    """
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D [N], got shape {tuple(rewards.shape)}")
    _check_groups(rewards.shape[0], group_size, eps)
    r = _float32_at_least(rewards).view(-1, group_size)  # [P, G]
    centered = r - r.mean(dim=1, keepdim=True)  # [P, G]
    std = {"group": lambda: r.std(dim=1, keepdim=True), "batch": lambda: r.std(), "none": lambda: None}[scale_name(scale)]()
    if std is not None:
        centered = centered / (std + eps)
    flat = is_flat(r.amax(dim=1, keepdim=True) - r.amin(dim=1, keepdim=True), min_spread)  # [P, 1]
    return torch.where(flat, torch.zeros_like(centered), centered).view(-1)


def check_step_tensors(step_rewards: Tensor, step_end_mask: Tensor, group_size: int, eps: float) -> None:
    """Shapes of a process estimator's inputs: both [N, T], N a multiple of group_size >= 2; eps >= 0."""
    if step_rewards.dim() != 2 or step_rewards.shape != step_end_mask.shape:
        raise ValueError(
            "step_rewards and step_end_mask must both be [N, T], got "
            f"{tuple(step_rewards.shape)} and {tuple(step_end_mask.shape)}"
        )
    _check_groups(step_rewards.shape[0], group_size, eps)


def masked_spread(x: Tensor, valid: Tensor) -> Tensor:
    """max - min of the valid entries of each row of x [P, M] -> [P, 1]; 0 where fewer than one is valid."""
    big = torch.finfo(x.dtype).max
    hi = torch.where(valid, x, -big).amax(dim=1, keepdim=True)
    lo = torch.where(valid, x, big).amin(dim=1, keepdim=True)
    return torch.where(valid.any(dim=1, keepdim=True), hi - lo, torch.zeros_like(hi))


def check_min_spread(min_spread: float) -> None:
    if not min_spread >= 0:
        raise ValueError(f"grpo.min_spread must be >= 0 (0: only groups of equal rewards are flat), got {min_spread}")


def is_flat(spread: Tensor, min_spread: float) -> Tensor:
    """Groups with no learning signal: rewards all equal, or spanning (max - min) less than min_spread
    (grpo.min_spread: differences a learned reward's noise makes count as none). spread [P, 1] -> [P, 1] bool."""
    check_min_spread(min_spread)
    return (spread == 0) | (spread < min_spread)


def masked_std(x: Tensor, valid: Tensor, how: str) -> Tensor | None:
    """The sample std (Bessel) of the valid entries of x [P, M]: per row [P, 1] (how="group"), of all of them
    (how="batch", a scalar), or None (how="none"). 0 where fewer than two entries are valid."""
    if how == "none":
        return None
    if how == "batch":
        marked = x[valid]
        return marked.std() if marked.numel() > 1 else torch.zeros((), dtype=x.dtype)
    count = valid.sum(dim=1, keepdim=True)
    mean = torch.where(valid, x, torch.zeros_like(x)).sum(dim=1, keepdim=True) / count.clamp(min=1)
    sq_dev = torch.where(valid, (x - mean) ** 2, torch.zeros_like(x))
    return (sq_dev.sum(dim=1, keepdim=True) / (count - 1).clamp(min=1)).sqrt()


def process_advantages(
    step_rewards: Tensor, step_end_mask: Tensor, group_size: int, scale: bool | str = True, eps: float = 1e-4,
    min_spread: float = 0.0,
) -> Tensor:
    """Process supervision: step rewards normalised over the whole group, summed from t onwards.

        r~_i^index(j) = (r_i^index(j) - mean(R)) / (std(R) + eps)    R: all step rewards of the group
        r~_i^index(j) = (r_i^index(j) - mean(R)) / (std(R_all) + eps) (scale="batch": R_all, every step
                                                                       reward of all N rows given)
        r~_i^index(j) =  r_i^index(j) - mean(R)                      (scale=False or "none", Dr. GRPO)
        A_it = sum over steps j of row i with index(j) >= t of r~_i^index(j)

    std is the sample std (Bessel); a group with a single step reward, or all equal, or spanning (max - min)
    less than min_spread, gets 0. A group with no marked step gets all zeros. A_it = 0 after the row's last step.

    step_rewards:  [N, T] float, step j's reward at the token index(j) where it ends.
    step_end_mask: [N, T] bool, True at those tokens; unmarked entries of step_rewards are ignored.
    Returns [N, T] (float32, or float64 if step_rewards are).
    """
    check_step_tensors(step_rewards, step_end_mask, group_size, eps)
    n_rows, T = step_rewards.shape
    is_end = step_end_mask.bool().view(-1, group_size * T)  # [P, G*T]
    r = _float32_at_least(step_rewards).view(-1, group_size * T)  # [P, G*T]
    r = torch.where(is_end, r, torch.zeros_like(r))  # unmarked entries -> 0, whatever they held
    count = is_end.sum(dim=1, keepdim=True)  # [P, 1] steps in the group
    mean = r.sum(dim=1, keepdim=True) / count.clamp(min=1)
    constant = is_flat(masked_spread(r, is_end), min_spread)  # [P, 1]: step rewards all equal (or one), or close
    std = masked_std(r, is_end, scale_name(scale))  # [P, 1], a scalar (batch) or None
    centered = r - mean if std is None else (r - mean) / (std + eps)
    normalised = torch.where(is_end & ~constant, centered, torch.zeros_like(r))
    normalised = normalised.view(n_rows, T)  # [N, T]
    return normalised.flip(1).cumsum(1).flip(1)  # reverse cumsum: sum over index(j) >= t


# ---------------------------------------------------------------- the components (conf/supervision/)
class AdvantageEstimator(Protocol):
    """What the rollout calls to turn rewards into advantages (the `supervision` config group).

    needs_step_rewards: False -> called with `rewards` [N] (one per output); True -> also with
        `step_rewards`, `step_end_mask` [N, T] (each step's reward at the token where it ends).
    Returns advantages [N] (every token of output i gets A_i) or [N, T]; a group with no learning
    signal must get exactly 0 (the rollout leaves such groups out of the update).
    """

    needs_step_rewards: ClassVar[bool]

    def __call__(self, rewards: Tensor, group_size: int, step_rewards: Tensor | None = None,
                 step_end_mask: Tensor | None = None) -> Tensor: ...


class OutcomeAdvantages:
    """supervision=outcome: `outcome_advantages` of the per-output rewards. scale: grpo.scale_rewards
    (true/"group", "batch", false/"none"); min_spread: grpo.min_spread (>= 0); a bad value fails here,
    before any run starts."""

    needs_step_rewards: ClassVar[bool] = False

    def __init__(self, scale: bool | str = True, eps: float = 1e-4, min_spread: float = 0.0):
        scale_name(scale)
        check_min_spread(min_spread)
        self.scale, self.eps, self.min_spread = scale, eps, min_spread

    def __call__(self, rewards, group_size, step_rewards=None, step_end_mask=None) -> Tensor:
        return outcome_advantages(rewards, group_size, scale=self.scale, eps=self.eps, min_spread=self.min_spread)


class StepAdvantages:
    """A process estimator (`needs_step_rewards`): `estimate` of the per-step rewards, with the settings of
    OutcomeAdvantages checked here. `option` names the supervision option in errors. supervision=process
    (ProcessAdvantages), process_min and process_progress differ only in `estimate`."""

    needs_step_rewards: ClassVar[bool] = True
    option: ClassVar[str] = "process"
    estimate: ClassVar = staticmethod(process_advantages)
    # True: outcome-only reward components (the verifier beside a PRM) reach `estimate` as `outcome` [N] instead of
    # being added to each completion's last step reward (grpo.rewards.combine)
    outcome_apart: ClassVar[bool] = False

    def __init__(self, scale: bool | str = True, eps: float = 1e-4, min_spread: float = 0.0):
        scale_name(scale)
        check_min_spread(min_spread)
        self.scale, self.eps, self.min_spread = scale, eps, min_spread

    def __call__(self, rewards, group_size, step_rewards=None, step_end_mask=None, outcome=None) -> Tensor:
        if step_rewards is None or step_end_mask is None:
            raise ValueError(f"supervision={self.option} needs step_rewards and step_end_mask [N, T]")
        extra = {"outcome": outcome} if self.outcome_apart else {}
        if outcome is not None and not self.outcome_apart:
            raise ValueError(f"supervision={self.option} takes outcome rewards on the last step, not apart")
        return self.estimate(step_rewards, step_end_mask, group_size, scale=self.scale, eps=self.eps,
                             min_spread=self.min_spread, **extra)


class ProcessAdvantages(StepAdvantages):
    """supervision=process: `process_advantages` of the per-step rewards (scale as OutcomeAdvantages)."""
