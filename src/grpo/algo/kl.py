"""Per-token estimators of KL(pi_theta || pi_ref) from log-probs of the sampled tokens.

With d = ref_logp - logp = log(pi_ref / pi_theta), for tokens sampled from pi_theta
(Schulman, "Approximating KL divergence", 2020):

    k1 = -d                    unbiased, can be negative per token
    k2 = 0.5 * d^2             biased, >= 0
    k3 = exp(d) - d - 1        unbiased, >= 0; the estimator DeepSeekMath uses (eq. 4)

All take logp, ref_logp of the same shape and return that shape, in their dtype (the losses cast
to float32 before calling). The `kl` config group picks one as a component (conf/kl/k3.yaml:
`_target_: grpo.algo.kl.k3`, `_partial_: true`); any function with this signature plugs in. All
estimators of KL_ESTIMATORS are logged (train/kl_k1, ...), whichever enters the loss.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

KLEstimator = Callable[[Tensor, Tensor], Tensor]


def k1(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k1 = log(pi_theta / pi_ref) = logp - ref_logp."""
    return logp - ref_logp


def k2(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k2 = 0.5 * (logp - ref_logp)^2."""
    return 0.5 * (logp - ref_logp) ** 2


def k3(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k3 = pi_ref/pi_theta - log(pi_ref/pi_theta) - 1 = exp(d) - d - 1, d = ref_logp - logp.

    Written as expm1(d) - d: the same value, without the cancellation of exp(d) - 1 near d = 0.
    """
    d = ref_logp - logp
    return torch.expm1(d) - d


KL_ESTIMATORS: dict[str, KLEstimator] = {"k1": k1, "k2": k2, "k3": k3}


def kl_estimator(name_or_fn: str | KLEstimator) -> KLEstimator:
    """The estimator called `name` ("k1", "k2" or "k3"); a callable is returned as is."""
    if callable(name_or_fn):
        return name_or_fn
    if name_or_fn not in KL_ESTIMATORS:
        raise ValueError(f"unknown KL estimator {name_or_fn!r}; valid choices: {sorted(KL_ESTIMATORS)}")
    return KL_ESTIMATORS[name_or_fn]
