"""Entropy controls around any policy loss: only the high-entropy "forking" tokens in the policy gradient
(Wang et al. 2025, "Beyond the 80/20 Rule", arXiv 2506.01939), and an entropy bonus.

    keep_t = 1[H_t >= tau_q],  tau_q = the (1 - q) quantile of H over this update's masked tokens
    J = J_inner(advantages A_t * keep_t)  +  entropy_coef * aggregate_t(H_t)
    H_t = -sum_v pi(v | q, o_<t) log pi(v | q, o_<t)   (the policy's entropy at token t, [N, T]); loss = -J

A token outside the top q gets advantage 0: no policy-gradient term (its ratio term is 0 under every clip),
while its KL term and the loss's normaliser stay as they are, as the paper's J_HighEnt (q = 0.2). The bonus
needs H's gradient; top-q alone uses H as a constant. Losses that average advantages over a row (GMPO) see
the masked advantages in that mean.

The loss seam's optional extension: a loss with `needs_entropy = True` is called with `entropy=` [N, T]
(GRPOModule computes it in the same forward pass as logp); `entropy_grad = True` asks for it with its graph.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from grpo.algo.aggregation import aggregation as get_aggregation


def top_entropy_mask(entropy: Tensor, mask: Tensor, quantile: float) -> Tensor:
    """[N, T] bool: masked tokens whose entropy is at least the (1 - quantile) quantile of the masked entropies."""
    real = mask.bool()
    if quantile >= 1 or not real.any():
        return real
    threshold = torch.quantile(entropy.detach()[real].float(), 1 - quantile)
    return real & (entropy.detach() >= threshold)


class EntropyControlledLoss:
    """Wraps a policy loss (`inner`, the `loss` seam's object). top_entropy_quantile: q in (0, 1], 1 = every token;
    entropy_coef: weight of the entropy bonus (0: none); aggregation / max_completion_len: how the bonus is
    reduced over tokens (grpo.aggregation, sampling.max_new_tokens)."""

    def __init__(self, inner, top_entropy_quantile: float = 1.0, entropy_coef: float = 0.0, aggregation: str = "sequence",
                 max_completion_len: int | None = None):
        if not 0 < top_entropy_quantile <= 1:
            raise ValueError(f"loss.top_entropy_quantile must be in (0, 1] (the paper: 0.2), got {top_entropy_quantile}")
        if top_entropy_quantile == 1 and entropy_coef == 0:
            raise ValueError("loss.top_entropy_quantile=1 and loss.entropy_coef=0 change nothing: set one of them")
        self.inner, self.top_entropy_quantile, self.entropy_coef = inner, top_entropy_quantile, entropy_coef
        self.aggregation, self.max_completion_len = aggregation, max_completion_len
        get_aggregation(aggregation)
        self.needs_entropy, self.entropy_grad = True, entropy_coef != 0

    @property
    def beta(self) -> float:
        return self.inner.beta

    def __call__(self, logp, old_logp, ref_logp, advantages, mask, num_tokens=None, entropy=None) -> tuple[Tensor, dict[str, Tensor]]:
        """entropy: [N, T] the policy's per-token entropy (with its graph when entropy_coef != 0)."""
        if entropy is None or entropy.shape != mask.shape:
            raise ValueError(f"loss entropy controls need entropy= of mask's shape {tuple(mask.shape)}, got "
                             f"{None if entropy is None else tuple(entropy.shape)} (GRPOModule passes it when needs_entropy)")
        keep = top_entropy_mask(entropy, mask, self.top_entropy_quantile)  # [N, T]
        adv = advantages[:, None].expand(mask.shape) if advantages.dim() == 1 else advantages  # [N, T]
        loss, stats = self.inner(logp, old_logp, ref_logp, adv * keep.to(adv.dtype), mask, num_tokens=num_tokens)
        real = mask.bool()
        stats["entropy_kept_frac"] = keep.sum().float() / real.sum().clamp(min=1)
        if self.entropy_coef != 0:
            aggregate = functools.partial(get_aggregation(self.aggregation), num_tokens=num_tokens, max_len=self.max_completion_len)
            bonus = aggregate(torch.where(real, entropy.float(), torch.zeros((), device=entropy.device)), real.float())
            loss = loss - self.entropy_coef * bonus
            stats["entropy_bonus"] = bonus.detach()
        return loss, stats
