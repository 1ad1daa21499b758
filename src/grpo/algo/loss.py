"""The GRPO clipped surrogate loss with a KL term (DeepSeekMath, arXiv 2402.03300, eq. 3).

    J = 1/G sum_i 1/|o_i| sum_t { min(rho_it A_it, clip(rho_it, 1-eps, 1+eps_high) A_it) - beta D_it }
    rho_it = exp(logp_it - old_logp_it),   D_it = a per-token KL estimate (k3 in the paper)
    loss = -J

With mu = 1 (one update per batch of rollouts) old_logp == logp.detach(): rho = 1, the logged loss
sits near 0 by construction (only -beta * KL, plus the mean advantage under "token"/"constant"
aggregation), and only rho's gradient, the policy gradient, matters. Watch reward, KL and
clip fraction instead.

A policy loss is a component (the `loss` config group): an object with `beta` (0: no reference
model is kept) and `__call__(logp, old_logp, ref_logp, advantages, mask, num_tokens=None) -> (loss, stats)`
(`num_tokens`: the count "token" aggregation divides by, see grpo.algo.aggregation.token_normaliser).
`GRPOLoss` here; `grpo.algo.cispo.CISPOLoss` is another. The helpers (`masked_inputs`, `kl_terms`,
`token_stats`) are what a new loss reuses.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import torch
from torch import Tensor

from grpo.algo.aggregation import aggregation as get_aggregation
from grpo.algo.kl import KL_ESTIMATORS, KLEstimator, kl_estimator as get_kl_estimator


# ---------------------------------------------------------------- ratio levels
def token_log_ratio(log_ratio: Tensor, mask: Tensor) -> Tensor:
    """GRPO: one ratio per token, [N, T] as given."""
    return log_ratio


def sequence_log_ratio(log_ratio: Tensor, mask: Tensor) -> Tensor:
    """GSPO (arXiv 2507.18071): the mean log-ratio over each row's masked tokens, broadcast to [N, T]."""
    row_len = mask.sum(dim=1, keepdim=True).clamp(min=1)  # [N, 1]
    return ((log_ratio * mask).sum(dim=1, keepdim=True) / row_len).expand_as(log_ratio)


RATIO_LEVELS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"token": token_log_ratio, "sequence": sequence_log_ratio}


# ---------------------------------------------------------------- shared by every policy loss
class MaskedInputs(NamedTuple):
    """float32, 0 at padded positions (so neither values nor gradients see inf/NaN there)."""

    logp: Tensor  # [N, T] carries the gradient
    old_logp: Tensor  # [N, T] constant (logp.detach() when on-policy)
    ref_logp: Tensor | None  # [N, T] constant
    advantages: Tensor  # [N, T] constant, broadcast from [N] for outcome supervision
    mask: Tensor  # [N, T] float 0/1


def masked_inputs(logp, old_logp, ref_logp, advantages, mask, beta: float) -> MaskedInputs:
    """Check shapes (see `grpo_loss`) and return the inputs as float32 with padded positions zeroed."""
    if beta != 0 and ref_logp is None:
        raise ValueError(f"ref_logp is required when beta != 0 (beta={beta})")
    if logp.dim() != 2 or mask.shape != logp.shape:
        raise ValueError(f"logp and mask must both be [N, T], got {tuple(logp.shape)} and {tuple(mask.shape)}")
    for name, other in (("old_logp", old_logp), ("ref_logp", ref_logp)):
        if other is not None and other.shape != logp.shape:
            raise ValueError(f"{name} must have logp's shape {tuple(logp.shape)}, got {tuple(other.shape)}")
    if advantages.shape not in (logp.shape[:1], logp.shape):
        raise ValueError(f"advantages must be [N] or [N, T] = {tuple(logp.shape)}, got {tuple(advantages.shape)}")
    is_real = mask.bool()  # [N, T]
    zero = torch.zeros((), dtype=torch.float32, device=logp.device)
    logp32 = torch.where(is_real, logp.float(), zero)  # [N, T]
    old = logp32.detach() if old_logp is None else torch.where(is_real, old_logp.detach().float(), zero)
    ref = None if ref_logp is None else torch.where(is_real, ref_logp.detach().float(), zero)
    adv = advantages.detach().float()
    adv = torch.where(is_real, adv[:, None] if adv.dim() == 1 else adv, zero)  # [N, T]
    return MaskedInputs(logp32, old, ref, adv, is_real.float())


def with_kl(pg_objective: Tensor, inputs: MaskedInputs, beta: float, kl_estimator: str | KLEstimator) -> tuple[Tensor, Tensor | None]:
    """Every policy loss's KL term: (pg_objective - beta * D [N, T], D [N, T] or None without a reference),
    D the chosen per-token estimator of KL(pi_theta || pi_ref)."""
    kl_tok = get_kl_estimator(kl_estimator)(inputs.logp, inputs.ref_logp) if inputs.ref_logp is not None else None
    return (pg_objective - beta * kl_tok if beta != 0 else pg_objective), kl_tok


def kl_terms(inputs: MaskedInputs) -> dict[str, Tensor]:
    """Every estimator of KL_ESTIMATORS per token ([N, T] each; {} without a reference)."""
    if inputs.ref_logp is None:
        return {}
    return {name: fn(inputs.logp, inputs.ref_logp) for name, fn in KL_ESTIMATORS.items()}


@torch.no_grad()
def token_stats(inputs: MaskedInputs, kl_tok: Tensor | None, kls: dict[str, Tensor], ratio: Tensor,
                clip_low: Tensor, clip_high: Tensor) -> dict[str, Tensor]:
    """Means over masked tokens: kl (the loss's estimator), kl_k1..k3, clip fractions (boolean [N, T] given), ratio."""
    mask = inputs.mask
    n_tokens = mask.sum().clamp(min=1)
    zero = torch.zeros((), dtype=torch.float32, device=mask.device)

    def masked_mean(x: Tensor) -> Tensor:
        return (x.float() * mask).sum() / n_tokens

    low, high = masked_mean(clip_low), masked_mean(clip_high)
    return {
        "kl": masked_mean(kl_tok) if kl_tok is not None else zero,
        **{f"kl_{name}": masked_mean(kls[name]) if kls else zero for name in KL_ESTIMATORS},
        "clip_frac_low": low,
        "clip_frac_high": high,
        "clip_frac": low + high,
        "ratio_mean": masked_mean(ratio),
    }


# ---------------------------------------------------------------- the GRPO loss
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
    kl_estimator: str | KLEstimator = "k3",
    aggregation: str = "sequence",
    ratio_level: str = "token",
    max_len: int | None = None,
    num_tokens: float | Tensor | None = None,
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
    beta: weight of the KL term; kl_estimator: "k1", "k2", "k3" or any function (see grpo.algo.kl).
    aggregation: "sequence" (the paper), "token" (DAPO) or "constant" (Dr. GRPO); see
        grpo.algo.aggregation. Under "sequence" rows with no masked token are left out of the mean
        over rows, so callers may drop whole rows (e.g. groups with zero reward spread) by masking them.
    max_len: "constant" divides by N x max_len (the longest completion allowed, sampling.max_new_tokens);
        None: N x T.
    num_tokens: "token" divides by it (the GRPO step's token count, see aggregation.token_normaliser);
        None: the masked tokens given here.
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
    aggregate = functools.partial(get_aggregation(aggregation), num_tokens=num_tokens, max_len=max_len)
    if ratio_level not in RATIO_LEVELS:
        raise ValueError(f"unknown ratio_level {ratio_level!r}; valid choices: {list(RATIO_LEVELS)}")
    kl_fn = get_kl_estimator(kl_estimator)
    x = masked_inputs(logp, old_logp, ref_logp, advantages, mask, beta)
    eps_low = epsilon
    eps_high = epsilon if epsilon_high is None else epsilon_high

    log_ratio = RATIO_LEVELS[ratio_level](x.logp - x.old_logp, x.mask)  # [N, T]
    ratio = torch.exp(log_ratio)  # [N, T]
    clipped_ratio = ratio.clamp(1 - eps_low, 1 + eps_high)
    pg_objective = torch.minimum(ratio * x.advantages, clipped_ratio * x.advantages)  # [N, T]

    kls = kl_terms(x)
    objective_tok, kl_tok = with_kl(pg_objective, x, beta, kl_fn)  # [N, T]
    objective = aggregate(objective_tok, x.mask)
    loss = -objective

    with torch.no_grad():
        stats = token_stats(
            x, kl_tok, kls, ratio,
            clip_low=(ratio < 1 - eps_low) & (x.advantages < 0),
            clip_high=(ratio > 1 + eps_high) & (x.advantages > 0),
        )
        stats["pg_loss"] = -aggregate(pg_objective, x.mask)
        stats["objective"] = objective.detach()
    return loss, {name: value.detach() for name, value in stats.items()}


class GRPOLoss:
    """`grpo_loss` with its settings bound (conf/loss/grpo.yaml). `beta` = 0 keeps no reference model;
    `max_completion_len` is the constant of "constant" aggregation (sampling.max_new_tokens)."""

    def __init__(self, epsilon: float = 0.2, epsilon_high: float | None = None, beta: float = 0.04,
                 kl_estimator: str | KLEstimator = "k3", aggregation: str = "sequence", ratio_level: str = "token",
                 max_completion_len: int | None = None):
        self.epsilon, self.epsilon_high, self.beta = epsilon, epsilon_high, beta
        self.kl_estimator, self.aggregation, self.ratio_level = kl_estimator, aggregation, ratio_level
        self.max_completion_len = max_completion_len
        if epsilon is None:
            raise ValueError("grpo.epsilon=null: loss=grpo clips the ratio below at 1 - epsilon and needs a number, "
                             "e.g. grpo.epsilon=0.2 (null, no lower bound, is loss=cispo's)")
        # unknown names fail at construction, before any run starts
        get_aggregation(self.aggregation)
        get_kl_estimator(self.kl_estimator)
        if self.ratio_level not in RATIO_LEVELS:
            raise ValueError(f"unknown ratio_level {self.ratio_level!r}; valid choices: {list(RATIO_LEVELS)}")

    def __call__(self, logp, old_logp, ref_logp, advantages, mask, num_tokens=None) -> tuple[Tensor, dict[str, Tensor]]:
        return grpo_loss(
            logp, old_logp, ref_logp, advantages, mask, epsilon=self.epsilon, epsilon_high=self.epsilon_high,
            beta=self.beta, kl_estimator=self.kl_estimator, aggregation=self.aggregation, ratio_level=self.ratio_level,
            max_len=self.max_completion_len, num_tokens=num_tokens,
        )
