"""SAPO (Soft Adaptive Policy Optimization, Qwen team, Gao et al. 2025, arXiv 2511.20347): a smooth,
temperature-controlled gate in place of the hard clip.

    J = 1/G sum_i 1/|o_i| sum_t { f_it(rho_it) A_it - beta D_it }
    f_it(r) = sigmoid(tau_it (r - 1)) * 4 / tau_it,      tau_it = tau_pos if A_it > 0 else tau_neg
    rho_it = exp(logp_it - old_logp_it);  loss = -J (aggregated by grpo.aggregation)

The gradient of f(rho) A with respect to logp is  w(rho) * rho * A,  w(r) = 4 p (1 - p),
p = sigmoid(tau (r - 1)): w(1) = 1, so on-policy (rho = 1) SAPO's gradient equals GRPO's; as rho leaves 1
the weight decays smoothly instead of dropping to 0 at 1 +- epsilon. tau_neg > tau_pos (the paper:
1.05 and 1.0) damps negative-advantage tokens faster, whose off-policy updates the paper finds less stable.
The logged objective differs from GRPO's by construction: f(1) = 2 / tau, not 1.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from grpo.algo.aggregation import aggregation as get_aggregation
from grpo.algo.kl import KLEstimator, kl_estimator as get_kl_estimator
from grpo.algo.loss import RATIO_LEVELS, kl_terms, masked_inputs, token_stats, with_kl


def sapo_gate(ratio: Tensor, advantages: Tensor, tau_pos: float, tau_neg: float) -> Tensor:
    """f(rho) [N, T]: sigmoid(tau (rho - 1)) * 4 / tau, tau chosen per token by the sign of A [N, T]."""
    tau = torch.where(advantages > 0, torch.full_like(ratio, tau_pos), torch.full_like(ratio, tau_neg))
    return torch.sigmoid(tau * (ratio - 1)) * 4 / tau


class SAPOLoss:
    """Shapes as `grpo.algo.loss.grpo_loss`: logp, old_logp, ref_logp, mask [N, T]; advantages [N] or [N, T].
    ratio_level: "token" (the paper) or "sequence" (GSPO's ratio under the same gate).
    max_completion_len: the constant of "constant" aggregation (sampling.max_new_tokens)."""

    def __init__(self, tau_pos: float = 1.0, tau_neg: float = 1.05, beta: float = 0.04, kl_estimator: str | KLEstimator = "k3",
                 aggregation: str = "sequence", ratio_level: str = "token", max_completion_len: int | None = None):
        if tau_pos <= 0 or tau_neg <= 0:
            raise ValueError(f"SAPO's temperatures must be > 0, got loss.tau_pos={tau_pos}, loss.tau_neg={tau_neg}")
        if ratio_level not in RATIO_LEVELS:
            raise ValueError(f"unknown ratio_level {ratio_level!r}; valid choices: {list(RATIO_LEVELS)}")
        self.tau_pos, self.tau_neg, self.beta = tau_pos, tau_neg, beta
        self.kl_estimator, self.aggregation, self.ratio_level = kl_estimator, aggregation, ratio_level
        self.max_completion_len = max_completion_len
        get_aggregation(self.aggregation)
        get_kl_estimator(self.kl_estimator)

    def __call__(self, logp, old_logp, ref_logp, advantages, mask, num_tokens=None) -> tuple[Tensor, dict[str, Tensor]]:
        aggregate = functools.partial(get_aggregation(self.aggregation), num_tokens=num_tokens, max_len=self.max_completion_len)
        x = masked_inputs(logp, old_logp, ref_logp, advantages, mask, self.beta)
        ratio = torch.exp(RATIO_LEVELS[self.ratio_level](x.logp - x.old_logp, x.mask))  # [N, T]
        pg_objective = sapo_gate(ratio, x.advantages, self.tau_pos, self.tau_neg) * x.advantages  # [N, T]
        kls = kl_terms(x)
        objective_tok, kl_tok = with_kl(pg_objective, x, self.beta, self.kl_estimator)
        objective = aggregate(objective_tok, x.mask)
        with torch.no_grad():
            # no hard clip: the "clip" fractions count tokens whose gradient weight 4p(1-p) fell below one half
            p = torch.sigmoid(torch.where(x.advantages > 0, self.tau_pos, self.tau_neg) * (ratio - 1))
            damped = 4 * p * (1 - p) < 0.5
            stats = token_stats(x, kl_tok, kls, ratio, clip_low=damped & (ratio < 1), clip_high=damped & (ratio > 1))
            stats["pg_loss"] = -aggregate(pg_objective, x.mask)
            stats["objective"] = objective.detach()
        return -objective, {name: value.detach() for name, value in stats.items()}
