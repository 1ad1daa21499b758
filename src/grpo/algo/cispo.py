"""CISPO (MiniMax-M1, arXiv 2506.13585): clip the importance weight, never the token's gradient.

    J = sum over tokens of  sg(clip(rho_it, 1 - eps_low, 1 + eps_high)) * A_it * log pi_theta(o_it)  - beta D_it
    rho_it = exp(logp_it - old_logp_it);  sg = stop-gradient;  loss = -J (aggregated, "token" by default)

PPO/GRPO's min(rho A, clip(rho) A) gives a clipped token zero gradient; CISPO keeps every token's
policy gradient and bounds only its weight. On-policy (rho = 1) its gradient equals GRPO's.
epsilon (eps_low) = None leaves the weight unbounded below (the paper's setting); eps_high bounds it above.
The weight is per token: a sequence-level ratio (GSPO's ratio_level="sequence") is refused.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from grpo.algo.aggregation import aggregation as get_aggregation
from grpo.algo.kl import KLEstimator, kl_estimator as get_kl_estimator
from grpo.algo.loss import kl_terms, masked_inputs, token_stats, with_kl


class CISPOLoss:
    """Shapes as `grpo.algo.loss.grpo_loss`: logp, old_logp, ref_logp, mask [N, T]; advantages [N] or [N, T].
    epsilon: the weight is at least 1 - epsilon (grpo.epsilon; None: no lower bound); epsilon_high: at most
    1 + epsilon_high (grpo.epsilon_high; None: epsilon). max_completion_len: the constant of "constant"
    aggregation (sampling.max_new_tokens)."""

    def __init__(self, epsilon: float | None = None, epsilon_high: float | None = 0.28, beta: float = 0.04,
                 kl_estimator: str | KLEstimator = "k3", aggregation: str = "token", ratio_level: str = "token",
                 max_completion_len: int | None = None):
        if ratio_level != "token":
            raise ValueError(f"grpo.ratio_level={ratio_level!r}: loss=cispo weighs each token by its own importance ratio; "
                             "use grpo.ratio_level=token, or loss=grpo for sequence-level ratios (GSPO)")
        if epsilon_high is None and epsilon is None:
            raise ValueError("grpo.epsilon_high=null and grpo.epsilon=null: loss=cispo needs an upper bound on its weight; "
                             "set grpo.epsilon_high (the paper: 0.28)")
        self.epsilon, self.epsilon_high, self.beta = epsilon, epsilon if epsilon_high is None else epsilon_high, beta
        self.kl_estimator, self.aggregation, self.max_completion_len = kl_estimator, aggregation, max_completion_len
        get_aggregation(self.aggregation)
        get_kl_estimator(self.kl_estimator)

    def __call__(self, logp, old_logp, ref_logp, advantages, mask, num_tokens=None) -> tuple[Tensor, dict[str, Tensor]]:
        """num_tokens: what "token" aggregation divides by (the step's count, see grpo.algo.aggregation)."""
        aggregate = functools.partial(get_aggregation(self.aggregation), num_tokens=num_tokens, max_len=self.max_completion_len)
        x = masked_inputs(logp, old_logp, ref_logp, advantages, mask, self.beta)
        ratio = torch.exp(x.logp - x.old_logp).detach()  # [N, T]
        low = 0.0 if self.epsilon is None else 1 - self.epsilon
        weight = ratio.clamp(min=low, max=1 + self.epsilon_high)  # [N, T], no gradient
        pg_objective = weight * x.advantages * x.logp  # [N, T]
        kls = kl_terms(x)
        objective_tok, kl_tok = with_kl(pg_objective, x, self.beta, self.kl_estimator)
        objective = aggregate(objective_tok, x.mask)
        with torch.no_grad():
            stats = token_stats(x, kl_tok, kls, ratio, clip_low=ratio < low, clip_high=ratio > 1 + self.epsilon_high)
            stats["pg_loss"] = -aggregate(pg_objective, x.mask)
            stats["objective"] = objective.detach()
        return -objective, {name: value.detach() for name, value in stats.items()}
