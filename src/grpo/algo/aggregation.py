"""How a loss reduces its per-token values [N, T] over the masked tokens to one scalar.

    sequence: mean over each row's tokens, then over rows (the paper: 1/G sum_i 1/|o_i| sum_t)
    token:    sum over all tokens / their count (DAPO: every token weighs the same)
    constant: sum over all tokens / (N x T), T = mask.shape[1] (Dr. GRPO: no length bias)

Each takes per_token [N, T] float and mask [N, T] float 0/1 and returns a scalar. A loss chooses one
by name (`grpo.aggregation`); adding one is a function here and an entry in AGGREGATIONS.
"""

from __future__ import annotations

from typing import Callable

from torch import Tensor


def sequence_mean(per_token: Tensor, mask: Tensor) -> Tensor:
    """Mean over each row's masked tokens, then over rows; rows with no masked token are left out."""
    row_len = mask.sum(dim=1)  # [N]
    row_mean = (per_token * mask).sum(dim=1) / row_len.clamp(min=1)  # [N]
    has_tokens = (row_len > 0).to(mask.dtype)
    return (row_mean * has_tokens).sum() / has_tokens.sum().clamp(min=1)


def token_mean(per_token: Tensor, mask: Tensor) -> Tensor:
    """Sum over all masked tokens / their count."""
    return (per_token * mask).sum() / mask.sum().clamp(min=1)


def constant_mean(per_token: Tensor, mask: Tensor) -> Tensor:
    """Sum over all masked tokens / (N x T)."""
    return (per_token * mask).sum() / mask.numel()


AGGREGATIONS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "sequence": sequence_mean,
    "token": token_mean,
    "constant": constant_mean,
}


def aggregation(name: str) -> Callable[[Tensor, Tensor], Tensor]:
    if name not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {name!r}; valid choices: {list(AGGREGATIONS)}")
    return AGGREGATIONS[name]
