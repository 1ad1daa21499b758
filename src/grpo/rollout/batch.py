"""The rollout: one exploration stage of GRPO, as tensors with their shapes written down."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor


@dataclass
class RolloutBatch:
    """N = prompts x group_size rows, each prompt's group contiguous; T = longest completion."""

    input_ids: Tensor  # [N, P+T] long: prompt left-padded, then completion right-padded
    attention_mask: Tensor  # [N, P+T] long
    completion_mask: Tensor  # [N, T] bool: tokens that enter the loss (rows left out of the update are all False)
    advantages: Tensor  # [N] (outcome supervision) or [N, T] (process supervision)
    old_logp: Tensor | None  # [N, T] log pi_old; None when the single update per rollout is on-policy
    ref_logp: Tensor | None  # [N, T] log pi_ref; None when beta == 0
    sampler_logp: Tensor | None = None  # [N, T] log-probs the rollout engine sampled with; None if it gives none
    policy_mask: Tensor | None = None  # [N, T] bool: the policy's own tokens, in the loss or not (tool results out); None:
                                       # the attention mask's completion part

    def rows(self, index: Tensor) -> dict[str, Tensor | None]:
        """The rows `index` as a training mini-batch, padding trimmed to its longest prompt and completion."""
        part = {f.name: (None if (v := getattr(self, f.name)) is None else v[index]) for f in fields(self)}
        T = self.completion_mask.shape[1]
        keep_t = int(part["attention_mask"][:, -T:].sum(0).nonzero().max()) + 1 if T else 0  # completion width in use
        prompt_cols = part["attention_mask"][:, :-T] if T else part["attention_mask"]
        drop_p = int((prompt_cols.sum(0) == 0).long().cumprod(0).sum())  # all-padding prompt columns on the left
        seq_end = part["input_ids"].shape[1] - (T - keep_t)
        for name in ("input_ids", "attention_mask"):
            part[name] = part[name][:, drop_p:seq_end]
        for name in ("completion_mask", "old_logp", "ref_logp", "sampler_logp", "policy_mask"):
            if part[name] is not None:
                part[name] = part[name][:, :keep_t]
        if part["advantages"].dim() == 2:
            part["advantages"] = part["advantages"][:, :keep_t]
        return part

    def __len__(self) -> int:
        return self.input_ids.shape[0]

