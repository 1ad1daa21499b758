"""Clip-Cov and KL-Cov (Cui et al. 2025, "The Entropy Mechanism of Reinforcement Learning for Reasoning
Language Models", arXiv 2505.22617): act on the few tokens whose log-prob and advantage co-vary most, the
tokens that drive the policy's entropy down.

    Cov_t = (A_t - mean A) * (logp_t - mean logp)        over the masked tokens of this update, logp detached

Clip-Cov: GRPO's clipped surrogate, but a random r-share of the tokens with Cov_t in (omega_low, omega_high)
(and not already clipped) get no gradient:
    J_t = sg(min(rho_t A_t, clip(rho_t) A_t))  for those tokens, min(rho_t A_t, clip(rho_t) A_t) otherwise
    picked: max(1, floor(r * n_tokens)) of them, drawn with a torch.Generator seeded by `seed` (the run's seed)

KL-Cov: the unclipped surrogate, with a KL penalty to the old policy on the top-k share of tokens by Cov:
    J_t = rho_t A_t - kl_coef * |logp_t - old_logp_t|   for the max(1, floor(k * n_tokens)) largest Cov_t,
    J_t = rho_t A_t                                    otherwise

Both then subtract beta * D_t (the KL to the reference, as GRPO) and reduce by grpo.aggregation; loss = -J.
KL-Cov's penalty is 0 with zero gradient on-policy (logp == old_logp): it acts from the second update on a
rollout (grpo.mu > 1 or several mini-batches). The paper's settings (r = 2e-4, omega = (1, 5); k = 2e-4 in
verl's recipe, kl_coef = 1) select only a handful of tokens in a batch: that is the method.
"""

from __future__ import annotations

import functools
import warnings

import torch
from torch import Tensor

from grpo.algo.aggregation import aggregation as get_aggregation
from grpo.algo.kl import KLEstimator, kl_estimator as get_kl_estimator
from grpo.algo.loss import MaskedInputs, kl_terms, masked_inputs, token_stats, with_kl


def token_covariance(x: MaskedInputs) -> Tensor:
    """Cov_t [N, T] = (A_t - mean A)(logp_t - mean logp), means over the masked tokens; -inf at padding."""
    n = x.mask.sum().clamp(min=1)
    logp = x.logp.detach()
    centred_adv = x.advantages - (x.advantages * x.mask).sum() / n
    centred_logp = logp - (logp * x.mask).sum() / n
    return torch.where(x.mask.bool(), centred_adv * centred_logp, torch.full_like(logp, -torch.inf))


def share_count(share: float, n_tokens: int) -> int:
    """max(1, floor(share * n_tokens)): how many tokens a share picks (at least one, as the paper's code)."""
    return max(1, int(share * n_tokens))


class _CovLoss:
    def __init__(self, beta, kl_estimator, aggregation, max_completion_len):
        self.beta, self.kl_estimator, self.aggregation, self.max_completion_len = beta, kl_estimator, aggregation, max_completion_len
        get_aggregation(self.aggregation)
        get_kl_estimator(self.kl_estimator)

    def _finish(self, x: MaskedInputs, pg_objective: Tensor, aggregate, ratio, clip_low, clip_high, picked: Tensor, name: str):
        kls = kl_terms(x)
        objective_tok, kl_tok = with_kl(pg_objective, x, self.beta, self.kl_estimator)
        objective = aggregate(objective_tok, x.mask)
        with torch.no_grad():
            stats = token_stats(x, kl_tok, kls, ratio, clip_low=clip_low, clip_high=clip_high)
            stats[name] = (picked.float() * x.mask).sum() / x.mask.sum().clamp(min=1)
            stats["pg_loss"] = -aggregate(pg_objective, x.mask)
            stats["objective"] = objective.detach()
        return -objective, {key: value.detach() for key, value in stats.items()}


class ClipCovLoss(_CovLoss):
    """Shapes as `grpo.algo.loss.grpo_loss`. clip_ratio: r, the share of tokens whose gradient is detached;
    cov_low, cov_high: the covariance window (omega_low, omega_high) they are drawn from; seed: the draws' seed."""

    def __init__(self, clip_ratio: float = 2e-4, cov_low: float = 1.0, cov_high: float = 5.0, seed: int = 0,
                 epsilon: float = 0.2, epsilon_high: float | None = None, beta: float = 0.04,
                 kl_estimator: str | KLEstimator = "k3", aggregation: str = "token", max_completion_len: int | None = None):
        if not 0 < clip_ratio <= 1 or cov_low >= cov_high:
            raise ValueError(f"Clip-Cov needs 0 < loss.clip_ratio <= 1 and loss.cov_low < loss.cov_high, "
                             f"got {clip_ratio}, ({cov_low}, {cov_high})")
        super().__init__(beta, kl_estimator, aggregation, max_completion_len)
        self.clip_ratio, self.cov_low, self.cov_high = clip_ratio, cov_low, cov_high
        self.epsilon, self.epsilon_high = epsilon, epsilon if epsilon_high is None else epsilon_high
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, logp, old_logp, ref_logp, advantages, mask, num_tokens=None) -> tuple[Tensor, dict[str, Tensor]]:
        aggregate = functools.partial(get_aggregation(self.aggregation), num_tokens=num_tokens, max_len=self.max_completion_len)
        x = masked_inputs(logp, old_logp, ref_logp, advantages, mask, self.beta)
        ratio = torch.exp(x.logp - x.old_logp)  # [N, T]
        unclipped = ratio * x.advantages
        clipped = ratio.clamp(1 - self.epsilon, 1 + self.epsilon_high) * x.advantages
        ppo = torch.minimum(unclipped, clipped)  # [N, T]
        cov = token_covariance(x)  # [N, T]
        candidates = x.mask.bool() & ~(clipped < unclipped) & (cov > self.cov_low) & (cov < self.cov_high)
        where = candidates.flatten().nonzero().squeeze(1)  # [C] flat indices
        n_pick = min(share_count(self.clip_ratio, int(x.mask.sum())), where.numel())
        chosen = where[torch.randperm(where.numel(), generator=self.generator)[:n_pick].to(where.device)]
        picked = torch.zeros(x.mask.numel(), dtype=torch.bool, device=x.mask.device)
        picked[chosen] = True
        picked = picked.view_as(x.mask)  # [N, T]
        pg_objective = torch.where(picked, ppo.detach(), ppo)  # [N, T]: the picked tokens keep their value, lose their gradient
        return self._finish(x, pg_objective, aggregate, ratio, clip_low=(clipped < unclipped) & (x.advantages < 0),
                            clip_high=(clipped < unclipped) & (x.advantages > 0), picked=picked, name="cov_clip_frac")


class KLCovLoss(_CovLoss):
    """Shapes as `grpo.algo.loss.grpo_loss`. kl_ratio: k, the share of tokens (largest Cov) that get the
    penalty kl_coef * |logp - old_logp|. No clip."""

    def __init__(self, kl_ratio: float = 2e-4, kl_coef: float = 1.0, beta: float = 0.04, kl_estimator: str | KLEstimator = "k3",
                 aggregation: str = "token", max_completion_len: int | None = None):
        if not 0 < kl_ratio <= 1 or kl_coef < 0:
            raise ValueError(f"KL-Cov needs 0 < loss.kl_ratio <= 1 and loss.kl_coef >= 0, got {kl_ratio}, {kl_coef}")
        super().__init__(beta, kl_estimator, aggregation, max_completion_len)
        self.kl_ratio, self.kl_coef = kl_ratio, kl_coef
        self._warned = False

    def __call__(self, logp, old_logp, ref_logp, advantages, mask, num_tokens=None) -> tuple[Tensor, dict[str, Tensor]]:
        if old_logp is None and not self._warned:
            warnings.warn("loss=kl_cov on-policy (no old log-probs): its penalty |logp - old_logp| is 0 with no gradient; "
                          "it acts with grpo.mu > 1 or grpo.minibatch_prompts < grpo.prompts_per_step", stacklevel=2)
            self._warned = True
        aggregate = functools.partial(get_aggregation(self.aggregation), num_tokens=num_tokens, max_len=self.max_completion_len)
        x = masked_inputs(logp, old_logp, ref_logp, advantages, mask, self.beta)
        log_ratio = x.logp - x.old_logp  # [N, T]
        ratio = torch.exp(log_ratio)
        cov = token_covariance(x).flatten()  # [N*T]
        n_real = int(x.mask.sum())
        picked = torch.zeros_like(cov, dtype=torch.bool)
        if n_real:
            picked[cov.topk(share_count(self.kl_ratio, n_real)).indices] = True
        picked = picked.view_as(x.mask) & x.mask.bool()  # [N, T]
        pg_objective = ratio * x.advantages - self.kl_coef * log_ratio.abs() * picked  # [N, T]
        none = torch.zeros_like(picked)
        return self._finish(x, pg_objective, aggregate, ratio, clip_low=none, clip_high=none, picked=picked, name="kl_cov_frac")
