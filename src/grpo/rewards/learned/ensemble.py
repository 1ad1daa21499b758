"""An ensemble of reward models read as one (reward.ensemble): a conservative score, meant to leave the policy
nothing to gain from one model's blind spot (Coste et al., "Reward Model Ensembles Help Mitigate Overoptimization",
arXiv 2310.02743; Eisenstein et al., arXiv 2312.09244). It helps only as far as the members err apart:
scripts/ensemble_agreement.py measures that (on task=arithmetic their errors were alike; docs/results.md).

Member k is the reward model `reward.seed + k` builds on its own (its own sampled training questions, held-out
split, head initialisation and data order), cached like a single one, so a member is shared with any run that
uses that seed alone. The members' scores are combined on their logits, where a reward model's score lives
before the sigmoid (a member's logit z_k = log p_k / (1 - p_k)), over the K members:

- mean: mean_k z_k
- min:  min_k z_k (worst-case optimisation: a step counts as right only as far as every member believes it)
- lcb:  mean_k z_k - std_weight * std_k z_k (a lower confidence bound: uncertainty-weighted optimisation; std
        over the members with no Bessel correction, so one member gives std 0)

With one member every aggregate is that member's logit: `reward.ensemble.size=1` (the default) is the single model.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import SimpleNamespace

import torch
from torch import Tensor, nn

AGGREGATES = ("mean", "min", "lcb")


def aggregate_logits(logits: Tensor, aggregate: str, std_weight: float | None = None) -> Tensor:
    """logits [K, ...] of K members -> [...] (see the module docstring)."""
    if aggregate == "mean":
        return logits.mean(0)
    if aggregate == "min":
        return logits.min(0).values
    if aggregate == "lcb":
        return logits.mean(0) - std_weight * logits.std(0, correction=0)
    raise ValueError(f"aggregate {aggregate!r} is not known; choose one of {', '.join(AGGREGATES)}")


def ensemble_settings(node: Mapping | None) -> dict:
    """reward.ensemble checked: {size, aggregate, std_weight}; a clear error for what cannot work."""
    if node is not None and not isinstance(node, Mapping):
        raise ValueError(f"reward.ensemble={node!r}: it is a group of settings; set them one by one, e.g. "
                         f"reward.ensemble.size=3 reward.ensemble.aggregate=min")
    node = dict(node or {})
    unknown = set(node) - {"size", "aggregate", "std_weight"}
    if unknown:
        raise ValueError(f"reward.ensemble has no setting {sorted(unknown)}; it takes size, aggregate and std_weight")
    size, aggregate, std_weight = node.get("size", 1), node.get("aggregate", "mean"), node.get("std_weight")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"reward.ensemble.size={size!r}: the number of reward models, an integer >= 1 (1: one model)")
    if aggregate not in AGGREGATES:
        raise ValueError(f"reward.ensemble.aggregate={aggregate!r} is not known; choose one of {', '.join(AGGREGATES)}")
    if aggregate == "lcb":
        if isinstance(std_weight, bool) or not isinstance(std_weight, (int, float)) or not 0 <= std_weight < float("inf"):
            raise ValueError(f"reward.ensemble.aggregate=lcb scores mean - std_weight * std: set reward.ensemble.std_weight "
                             f"to a number >= 0 (got {std_weight!r}; e.g. reward.ensemble.std_weight=1)")
        std_weight = float(std_weight)
    elif std_weight is not None:
        raise ValueError(f"reward.ensemble.std_weight={std_weight!r} is read by aggregate=lcb only; with "
                         f"aggregate={aggregate} it would do nothing: add reward.ensemble.aggregate=lcb, or drop it")
    return {"size": size, "aggregate": aggregate, "std_weight": std_weight}


class RewardEnsemble(nn.Module):
    """K scalar-head models called as one: `forward` returns `.logits` [N, L, 1], the members' logits aggregated.

    Scoring and evaluation take it as they take one model (grpo.rewards.learned.network.target_logits); training
    trains each member on its own (`members`), never the aggregate.
    """

    def __init__(self, members: list[nn.Module], aggregate: str, std_weight: float | None = None):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.aggregate, self.std_weight = aggregate, std_weight

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> SimpleNamespace:
        logits = torch.stack([m(input_ids=input_ids, attention_mask=attention_mask).logits.float() for m in self.members])
        return SimpleNamespace(logits=aggregate_logits(logits, self.aggregate, self.std_weight))
