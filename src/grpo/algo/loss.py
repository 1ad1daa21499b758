"""The GRPO clipped surrogate loss with a KL term (DeepSeekMath, arXiv 2402.03300, eq. 3).

    J = 1/G sum_i 1/|o_i| sum_t { min(rho_it A_it, clip(rho_it, 1-eps, 1+eps_high) A_it) - beta D_it }
    rho_it = exp(logp_it - old_logp_it),   D_it = a per-token KL estimate (k3 in the paper)
    loss = -J

With mu = 1 (one update per batch of rollouts) old_logp == logp.detach(): rho = 1, the logged loss
sits near 0 by construction (only -beta * KL, plus the mean advantage under "token"/"constant"
aggregation), and only rho's gradient, the policy gradient, matters. Watch reward, KL and
clip fraction instead.
"""

from __future__ import annotations

import torch
from torch import Tensor

from grpo.algo.kl import KL_ESTIMATORS, kl_estimator as get_kl_estimator

AGGREGATIONS = ("sequence", "token", "constant")
RATIO_LEVELS = ("token", "sequence")


def _aggregate(per_token: Tensor, mask: Tensor, aggregation: str) -> Tensor:
    """Reduce [N, T] per-token values over the masked tokens to a scalar (mask: [N, T] float 0/1)."""
    masked = per_token * mask
    if aggregation == "sequence":  # the paper: mean over each row's tokens, then over rows
        row_len = mask.sum(dim=1)  # [N]
        row_mean = masked.sum(dim=1) / row_len.clamp(min=1)  # [N]
        has_tokens = (row_len > 0).to(mask.dtype)  # rows with no masked token are left out
        return (row_mean * has_tokens).sum() / has_tokens.sum().clamp(min=1)
    if aggregation == "token":  # DAPO: every token of the batch weighs the same
        return masked.sum() / mask.sum().clamp(min=1)
    return masked.sum() / mask.numel()  # "constant", Dr. GRPO: divide by N x T


def grpo_loss(
    logp: Tensor,
    old_logp: Tensor | None,
    ref_logp: Tensor | None,
    advantages: Tensor,
    mask: Tensor,
    *,
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
    beta: float = 0.04,
    kl_estimator: str = "k3",
    aggregation: str = "sequence",
    ratio_level: str = "token",
) -> tuple[Tensor, dict[str, Tensor]]:
    """GRPO loss (-J above) and detached scalar stats.

    logp:       [N, T] log-probs of the completion tokens under pi_theta (carries the gradient).
    old_logp:   [N, T] under pi_old (treated as a constant), or None: on-policy, old = logp.detach().
    ref_logp:   [N, T] under pi_ref (constant), or None; required when beta != 0.
    advantages: [N] (outcome, broadcast over tokens) or [N, T] (process); treated as constants.
    mask:       [N, T] bool or 0/1 float, real completion tokens. Values at unmasked positions
                never matter, however large (they are replaced by 0 before any math).

    epsilon, epsilon_high: clip range [1 - epsilon, 1 + epsilon_high]; epsilon_high defaults to
        epsilon (DAPO's clip-higher sets it larger).
    beta: weight of the KL term; kl_estimator: "k1", "k2" or "k3" (see grpo.algo.kl).
    aggregation:
        "sequence": mean over each row's masked tokens, then mean over rows (the paper). Rows with
            no masked token are left out of the mean over rows, so callers may drop whole rows
            (e.g. groups with zero reward spread) by masking them out.
        "token":    sum over all masked tokens / their count (DAPO).
        "constant": sum over all masked tokens / (N x T), T = mask.shape[1] (Dr. GRPO).
    ratio_level:
        "token":    rho_it per token (the paper).
        "sequence": GSPO (arXiv 2507.18071): s_i = exp(mean over row i's masked tokens of
            (logp - old_logp)), broadcast to the row's tokens and clipped the same way. Sequence
            ratios stay much closer to 1, so GSPO uses far smaller epsilons (~3e-4 / 4e-4).

    With no masked token at all the loss is 0 but still part of logp's graph (backward gives zero
    gradients), so a distributed backward does not hang. Math is float32 whatever the input dtype.

    Returns (loss, stats): stats are detached float32 scalars, means over masked tokens:
        kl (the configured estimator; 0 without ref_logp), kl_k1, kl_k2, kl_k3 (0 without ref_logp),
        clip_frac_low (rho < 1-eps and A < 0), clip_frac_high (rho > 1+eps_high and A > 0),
        clip_frac (their sum), ratio_mean, pg_loss (the clipped policy-gradient part of the loss
        alone), objective (J, = -loss).
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {aggregation!r}; valid choices: {list(AGGREGATIONS)}")
    if ratio_level not in RATIO_LEVELS:
        raise ValueError(f"unknown ratio_level {ratio_level!r}; valid choices: {list(RATIO_LEVELS)}")
    get_kl_estimator(kl_estimator)  # raises on an unknown name
    if beta != 0 and ref_logp is None:
        raise ValueError(f"ref_logp is required when beta != 0 (beta={beta})")
    if logp.dim() != 2 or mask.shape != logp.shape:
        raise ValueError(f"logp and mask must both be [N, T], got {tuple(logp.shape)} and {tuple(mask.shape)}")
    for name, other in (("old_logp", old_logp), ("ref_logp", ref_logp)):
        if other is not None and other.shape != logp.shape:
            raise ValueError(f"{name} must have logp's shape {tuple(logp.shape)}, got {tuple(other.shape)}")
    if advantages.shape not in (logp.shape[:1], logp.shape):
        raise ValueError(f"advantages must be [N] or [N, T] = {tuple(logp.shape)}, got {tuple(advantages.shape)}")
    eps_low = epsilon
    eps_high = epsilon if epsilon_high is None else epsilon_high

    is_real = mask.bool()  # [N, T]
    mask_f = is_real.float()  # [N, T]
    zero = torch.zeros((), dtype=torch.float32, device=logp.device)
    # Padded positions become 0 before any exp, so neither the values nor the gradients see inf/NaN.
    logp32 = torch.where(is_real, logp.float(), zero)  # [N, T]
    old = logp32.detach() if old_logp is None else torch.where(is_real, old_logp.detach().float(), zero)
    adv = advantages.detach().float()
    adv = torch.where(is_real, adv[:, None] if adv.dim() == 1 else adv, zero)  # [N, T]

    log_ratio = logp32 - old  # [N, T]
    if ratio_level == "sequence":
        row_len = mask_f.sum(dim=1, keepdim=True).clamp(min=1)  # [N, 1]
        log_ratio = ((log_ratio * mask_f).sum(dim=1, keepdim=True) / row_len).expand_as(logp32)
    ratio = torch.exp(log_ratio)  # [N, T]
    clipped_ratio = ratio.clamp(1 - eps_low, 1 + eps_high)
    pg_objective = torch.minimum(ratio * adv, clipped_ratio * adv)  # [N, T]

    kls = {}
    if ref_logp is not None:
        ref = torch.where(is_real, ref_logp.detach().float(), zero)
        kls = {name: fn(logp32, ref) for name, fn in KL_ESTIMATORS.items()}  # each [N, T]
    objective_tok = pg_objective - beta * kls[kl_estimator] if beta != 0 else pg_objective

    objective = _aggregate(objective_tok, mask_f, aggregation)
    loss = -objective

    with torch.no_grad():
        n_tokens = mask_f.sum().clamp(min=1)

        def masked_mean(x: Tensor) -> Tensor:
            return (x.float() * mask_f).sum() / n_tokens

        clip_low = masked_mean((ratio < 1 - eps_low) & (adv < 0))
        clip_high = masked_mean((ratio > 1 + eps_high) & (adv > 0))
        stats = {
            "kl": masked_mean(kls[kl_estimator]) if kls else zero,
            **{f"kl_{name}": masked_mean(kls[name]) if kls else zero for name in KL_ESTIMATORS},
            "clip_frac_low": clip_low,
            "clip_frac_high": clip_high,
            "clip_frac": clip_low + clip_high,
            "ratio_mean": masked_mean(ratio),
            "pg_loss": -_aggregate(pg_objective, mask_f, aggregation),
            "objective": objective.detach(),
        }
    return loss, {name: value.detach() for name, value in stats.items()}
