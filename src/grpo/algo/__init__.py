"""Pure tensor math of GRPO: group-relative advantages, KL estimators, the clipped loss.

No Lightning, Hydra or model imports here: the LightningModule gathers tensors and calls these.
"""

from grpo.algo.advantages import outcome_advantages, process_advantages
from grpo.algo.kl import KL_ESTIMATORS, k1, k2, k3, kl_estimator
from grpo.algo.loss import grpo_loss

__all__ = [
    "KL_ESTIMATORS",
    "grpo_loss",
    "k1",
    "k2",
    "k3",
    "kl_estimator",
    "outcome_advantages",
    "process_advantages",
]
