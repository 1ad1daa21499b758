"""Sampler-trainer mismatch: the rollout engine's log-probs against the trainer's, and two corrections.

The engine samples token o_t from pi_sampler; the trainer recomputes log pi_old(o_t) with its own kernels
(another batch shape, no KV cache, bf16 rounding elsewhere). The two are the same policy in exact
arithmetic and not in floating point (Liu, Li et al., "When Speed Kills Stability: Demystifying RL
Collapse from the Training-Inference Mismatch", 2025; Yao et al., "Your Efficient RL Framework Secretly
Brings You Off-Policy RL Training", 2025). Per token, with both log-probs in the same convention
(temperature-scaled, no top_p; grpo.rollout.sampler.token_logp):

    r_t = pi_old_trainer(o_t) / pi_sampler(o_t) = exp(old_logp_t - sampler_logp_t)

- `mismatch_stats`: mean r_t and the share of tokens with r_t outside [0.9, 1.1] (rollout/mismatch/*).
- TIS, truncated importance sampling (`TruncatedIS`; TRL's vllm_importance_sampling_mode="token_truncate",
  verl's rollout_is=token): each token's policy-gradient term is multiplied by w_t = min(r_t, C), a
  constant (no gradient). The KL term is not weighted (as verl's pg_losses * rollout_is_weights). Done
  by scaling the advantages, A_t <- w_t A_t: every policy loss here is positively homogeneous in A
  (min(rho wA, clip(rho) wA) = w min(rho A, clip(rho) A) for w > 0).
- MIS, masked importance sampling (`MaskedIS`; IcePop, Ling team 2025; verl's rollout_rs=token with the
  default lower bound 1/upper): tokens with r_t outside [1/C, C] leave the loss (completion_mask False:
  out of the token count too), the rest are unweighted.
C = grpo.rollout_is_cap (TRL's vllm_importance_sampling_cap, verl's rollout_is_threshold; 2 in both).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

MISMATCH_BAND = (0.9, 1.1)  # rollout/mismatch/outside_frac: share of tokens whose ratio leaves this band


def mismatch_ratio(old_logp: Tensor, sampler_logp: Tensor, mask: Tensor) -> Tensor:
    """r [N, T] = exp(old_logp - sampler_logp) (float32), 1 at padding (mask [N, T] False)."""
    if old_logp.shape != sampler_logp.shape or mask.shape != old_logp.shape:
        raise ValueError(f"old_logp, sampler_logp and mask must share one shape [N, T], got "
                         f"{tuple(old_logp.shape)}, {tuple(sampler_logp.shape)}, {tuple(mask.shape)}")
    log_r = torch.where(mask.bool(), old_logp.float() - sampler_logp.float(), torch.zeros((), device=old_logp.device))
    return log_r.exp()


@torch.no_grad()
def mismatch_stats(old_logp: Tensor, sampler_logp: Tensor, mask: Tensor) -> dict[str, float]:
    """{"ratio_mean": mean r_t, "outside_frac": share of r_t outside MISMATCH_BAND} over the masked tokens."""
    is_real = mask.bool()
    r = mismatch_ratio(old_logp, sampler_logp, mask)[is_real]
    if r.numel() == 0:
        return {"ratio_mean": 1.0, "outside_frac": 0.0}
    low, high = MISMATCH_BAND
    return {"ratio_mean": r.mean().item(), "outside_frac": ((r < low) | (r > high)).float().mean().item()}


def _check_cap(cap: float, option: str) -> float:
    if not cap > 1:
        raise ValueError(f"grpo.rollout_is_cap={cap!r}: rollout_correction={option} needs a cap C > 1 (e.g. 2)")
    return float(cap)


def _per_token(advantages: Tensor, like: Tensor) -> Tensor:
    """advantages [N] or [N, T] -> [N, T] float32 (an outcome advantage on every token)."""
    adv = advantages.float()
    return (adv[:, None] if adv.dim() == 1 else adv).expand_as(like).clone()


class NoCorrection:
    """rollout_correction=none: the sampler's log-probs are only measured (rollout/mismatch/*)."""

    needs_old_logp: ClassVar[bool] = False

    def __call__(self, advantages, completion_mask, old_logp, sampler_logp):
        return advantages, completion_mask, {}


class TruncatedIS:
    """rollout_correction=tis: A_t <- min(r_t, cap) A_t. Returns (advantages [N, T], completion_mask as
    given, {"is_weight_mean": mean w_t, "is_capped_frac": share of tokens with r_t > cap}) over the mask."""

    needs_old_logp: ClassVar[bool] = True

    def __init__(self, cap: float = 2.0):
        self.cap = _check_cap(cap, "tis")

    def __call__(self, advantages: Tensor, completion_mask: Tensor, old_logp: Tensor, sampler_logp: Tensor):
        r = mismatch_ratio(old_logp, sampler_logp, completion_mask)  # [N, T]
        w = r.clamp(max=self.cap)
        real = completion_mask.bool()
        n = real.sum().clamp(min=1)
        stats = {"is_weight_mean": ((w * real).sum() / n).item(), "is_capped_frac": ((r > self.cap) & real).sum().item() / n.item()}
        return _per_token(advantages, w) * w, completion_mask, stats


class MaskedIS:
    """rollout_correction=mis: tokens with r_t outside [1/cap, cap] leave the loss. Returns (advantages as
    given, completion_mask [N, T] with them False, {"is_masked_frac": their share of the masked tokens})."""

    needs_old_logp: ClassVar[bool] = True

    def __init__(self, cap: float = 2.0):
        self.cap = _check_cap(cap, "mis")

    def __call__(self, advantages: Tensor, completion_mask: Tensor, old_logp: Tensor, sampler_logp: Tensor):
        r = mismatch_ratio(old_logp, sampler_logp, completion_mask)  # [N, T]
        real = completion_mask.bool()
        outside = ((r < 1 / self.cap) | (r > self.cap)) & real
        stats = {"is_masked_frac": outside.sum().item() / max(int(real.sum()), 1)}
        return advantages, real & ~outside, stats
