"""GMPO (Geometric-Mean Policy Optimization, Zhao et al. 2025, arXiv 2507.20673): the geometric mean of the
token ratios of a sequence, clipped per token in log space.

    J = 1/G sum_i  A_i * exp( 1/|o_i| sum_t  sgn(A_i) min(sgn(A_i) l_it, sgn(A_i) clip(l_it, -eps_low, eps_high)) )
        - beta * (KL term, per token as GRPO)
    l_it = logp_it - old_logp_it (the token's log-ratio);  loss = -J

i.e. (prod_t rho_it)^(1/|o_i|) A_i with each token's ratio clipped the PPO way (only in the direction the
advantage pushes it) before the product: an outlier token moves the geometric mean far less than GRPO's
arithmetic mean of rho_it A_i, so the paper can widen the clip range to (e^-0.4, e^0.4). A clipped token
gets no gradient; every other token of the sequence gets (1/|o_i|) A_i * (the sequence's geometric ratio).

A_i is the sequence's advantage; [N, T] advantages (process supervision) enter as their mean over the row's
masked tokens (as verl's geo_mean loss does). The sequence objective is given to every token of its row and
reduced by grpo.aggregation: "sequence" (the default) is the paper's 1/G sum_i; "token" weighs rows by length.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from grpo.algo.aggregation import aggregation as get_aggregation
from grpo.algo.kl import KLEstimator, kl_estimator as get_kl_estimator
from grpo.algo.loss import kl_terms, masked_inputs, token_stats, with_kl


class GMPOLoss:
    """Shapes as `grpo.algo.loss.grpo_loss`: logp, old_logp, ref_logp, mask [N, T]; advantages [N] or [N, T].
    epsilon, epsilon_high: the clip range of the LOG-ratio, [-epsilon, epsilon_high] (epsilon_high None: epsilon).
    max_completion_len: the constant of "constant" aggregation (sampling.max_new_tokens)."""

    def __init__(self, epsilon: float = 0.4, epsilon_high: float | None = None, beta: float = 0.04,
                 kl_estimator: str | KLEstimator = "k3", aggregation: str = "sequence", max_completion_len: int | None = None):
        if epsilon <= 0 or (epsilon_high is not None and epsilon_high <= 0):
            raise ValueError(f"GMPO's log-space clip range must be > 0, got loss.epsilon={epsilon}, loss.epsilon_high={epsilon_high}")
        self.epsilon, self.epsilon_high, self.beta = epsilon, epsilon_high, beta
        self.kl_estimator, self.aggregation, self.max_completion_len = kl_estimator, aggregation, max_completion_len
        get_aggregation(self.aggregation)
        get_kl_estimator(self.kl_estimator)

    def __call__(self, logp, old_logp, ref_logp, advantages, mask, num_tokens=None) -> tuple[Tensor, dict[str, Tensor]]:
        aggregate = functools.partial(get_aggregation(self.aggregation), num_tokens=num_tokens, max_len=self.max_completion_len)
        x = masked_inputs(logp, old_logp, ref_logp, advantages, mask, self.beta)
        eps_high = self.epsilon if self.epsilon_high is None else self.epsilon_high
        row_len = x.mask.sum(dim=1).clamp(min=1)  # [N]
        seq_adv = (x.advantages * x.mask).sum(dim=1) / row_len  # [N] A_i
        sign = torch.sign(seq_adv)[:, None]  # [N, 1]
        log_ratio = x.logp - x.old_logp  # [N, T]
        clipped = log_ratio.clamp(-self.epsilon, eps_high)  # [N, T]
        kept = sign * torch.minimum(sign * log_ratio, sign * clipped)  # [N, T] the pessimistic one for A_i's sign
        geo_ratio = torch.exp((kept * x.mask).sum(dim=1) / row_len)  # [N] (prod_t rho_it)^(1/|o_i|), clipped
        pg_objective = (seq_adv * geo_ratio)[:, None].expand_as(x.logp)  # [N, T] the row's objective on each token
        kls = kl_terms(x)
        objective_tok, kl_tok = with_kl(pg_objective, x, self.beta, self.kl_estimator)
        objective = aggregate(objective_tok, x.mask)
        with torch.no_grad():
            was_clipped = kept != log_ratio  # [N, T]
            stats = token_stats(x, kl_tok, kls, log_ratio.exp(), clip_low=was_clipped & (sign < 0), clip_high=was_clipped & (sign > 0))
            stats["geo_ratio_mean"] = geo_ratio[x.mask.sum(dim=1) > 0].mean() if x.mask.any() else geo_ratio.new_ones(())
            stats["pg_loss"] = -aggregate(pg_objective, x.mask)
            stats["objective"] = objective.detach()
        return -objective, {name: value.detach() for name, value in stats.items()}
