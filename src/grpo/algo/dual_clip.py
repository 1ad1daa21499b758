"""Dual-clip PPO (Ye et al. 2020, "Mastering Complex Control in MOBA Games with Deep RL", arXiv 1912.09729):
GRPO's clipped surrogate with a second bound for negative advantages.

    J_it = min(rho_it A_it, clip(rho_it, 1 - eps, 1 + eps_high) A_it)                 if A_it >= 0
    J_it = max( min(rho_it A_it, clip(rho_it, 1 - eps, 1 + eps_high) A_it), delta A_it )  if A_it < 0
    J = aggregate over tokens of (J_it - beta D_it);  loss = -J;  delta > 1 (verl's clip_ratio_c, default 3)

With A < 0 PPO's min() leaves rho A unbounded below: a token the old policy made unlikely but the new one
makes likely (rho >> 1) gets a huge, unclipped gradient. Dual clip caps its contribution at delta * A and
gives it no gradient there (the bound is a constant), a two-sided clip on the ratio of negative tokens.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from grpo.algo.aggregation import aggregation as get_aggregation
from grpo.algo.kl import KLEstimator, kl_estimator as get_kl_estimator
from grpo.algo.loss import RATIO_LEVELS, kl_terms, masked_inputs, token_stats, with_kl


class DualClipLoss:
    """Shapes as `grpo.algo.loss.grpo_loss`: logp, old_logp, ref_logp, mask [N, T]; advantages [N] or [N, T].
    epsilon, epsilon_high, ratio_level: as GRPO's (grpo.*); delta: the lower bound's factor (> 1).
    max_completion_len: the constant of "constant" aggregation (sampling.max_new_tokens)."""

    def __init__(self, delta: float = 3.0, epsilon: float = 0.2, epsilon_high: float | None = None, beta: float = 0.04,
                 kl_estimator: str | KLEstimator = "k3", aggregation: str = "sequence", ratio_level: str = "token",
                 max_completion_len: int | None = None):
        eps_high = epsilon if epsilon_high is None else epsilon_high
        if delta <= 1 + eps_high:
            raise ValueError(f"loss.delta={delta} must exceed the upper clip 1 + epsilon_high = {1 + eps_high} (the paper: 3)")
        if ratio_level not in RATIO_LEVELS:
            raise ValueError(f"unknown ratio_level {ratio_level!r}; valid choices: {list(RATIO_LEVELS)}")
        self.delta, self.epsilon, self.epsilon_high, self.beta = delta, epsilon, eps_high, beta
        self.kl_estimator, self.aggregation, self.ratio_level = kl_estimator, aggregation, ratio_level
        self.max_completion_len = max_completion_len
        get_aggregation(self.aggregation)
        get_kl_estimator(self.kl_estimator)

    def __call__(self, logp, old_logp, ref_logp, advantages, mask, num_tokens=None) -> tuple[Tensor, dict[str, Tensor]]:
        aggregate = functools.partial(get_aggregation(self.aggregation), num_tokens=num_tokens, max_len=self.max_completion_len)
        x = masked_inputs(logp, old_logp, ref_logp, advantages, mask, self.beta)
        ratio = torch.exp(RATIO_LEVELS[self.ratio_level](x.logp - x.old_logp, x.mask))  # [N, T]
        clipped_ratio = ratio.clamp(1 - self.epsilon, 1 + self.epsilon_high)
        ppo = torch.minimum(ratio * x.advantages, clipped_ratio * x.advantages)  # [N, T]
        negative = x.advantages < 0
        floor = self.delta * x.advantages  # [N, T] constant
        pg_objective = torch.where(negative, torch.maximum(ppo, floor), ppo)  # [N, T]
        kls = kl_terms(x)
        objective_tok, kl_tok = with_kl(pg_objective, x, self.beta, self.kl_estimator)
        objective = aggregate(objective_tok, x.mask)
        with torch.no_grad():
            stats = token_stats(x, kl_tok, kls, ratio, clip_low=(ratio < 1 - self.epsilon) & negative,
                                clip_high=(ratio > 1 + self.epsilon_high) & (x.advantages > 0))
            dual = negative & (ppo < floor)  # [N, T] held at delta * A
            stats["clip_frac_dual"] = (dual.float() * x.mask).sum() / x.mask.sum().clamp(min=1)
            stats["pg_loss"] = -aggregate(pg_objective, x.mask)
            stats["objective"] = objective.detach()
        return -objective, {name: value.detach() for name, value in stats.items()}
