"""How a loss reduces its per-token values [N, T] over the masked tokens to one scalar.

    sequence: mean over each row's tokens, then over rows (the paper: 1/G sum_i 1/|o_i| sum_t)
    token:    sum over all tokens / the token count of the whole GRPO step (DAPO: every token of the
              step weighs the same, whichever mini-batch or process holds it); `num_tokens` gives the
              count (see `token_normaliser`), None: this call's own mask.sum()
    constant: sum over all tokens / (N x max_len), max_len = the longest completion allowed
              (sampling.max_new_tokens), not the batch's longest (Dr. GRPO: no length bias); None:
              mask.shape[1]

Each takes per_token [N, T] float and mask [N, T] float 0/1 (and the keywords `num_tokens`, `max_len`,
which the ones that do not need them ignore) and returns a scalar. A loss chooses one by name
(`grpo.aggregation`); adding one is a function here and an entry in AGGREGATIONS.
"""

from __future__ import annotations

from typing import Callable

from torch import Tensor


def sequence_mean(per_token: Tensor, mask: Tensor, *, num_tokens=None, max_len=None) -> Tensor:
    """Mean over each row's masked tokens, then over rows; rows with no masked token are left out."""
    row_len = mask.sum(dim=1)  # [N]
    row_mean = (per_token * mask).sum(dim=1) / row_len.clamp(min=1)  # [N]
    has_tokens = (row_len > 0).to(mask.dtype)
    return (row_mean * has_tokens).sum() / has_tokens.sum().clamp(min=1)


def token_mean(per_token: Tensor, mask: Tensor, *, num_tokens: float | Tensor | None = None, max_len=None) -> Tensor:
    """Sum over all masked tokens / num_tokens (None: their count here, mask.sum())."""
    count = mask.sum().clamp(min=1) if num_tokens is None else num_tokens
    return (per_token * mask).sum() / count


def constant_mean(per_token: Tensor, mask: Tensor, *, num_tokens=None, max_len: int | None = None) -> Tensor:
    """Sum over all masked tokens / (N x max_len) (None: N x T, T = mask.shape[1]).

    max_len bounds the tokens of a row in the loss (the policy's own: with tools, T also holds tool results)."""
    N, T = mask.shape
    if max_len is None:
        max_len = T
    longest = int(mask.sum(dim=1).max()) if max_len < T and N else 0  # a host sync only when T exceeds it (tools)
    if max_len < longest:
        raise ValueError(f"max_len={max_len} is shorter than a completion given ({longest} tokens in the loss): "
                         "pass sampling.max_new_tokens")
    return (per_token * mask).sum() / (N * max_len)


AGGREGATIONS: dict[str, Callable[..., Tensor]] = {
    "sequence": sequence_mean,
    "token": token_mean,
    "constant": constant_mean,
}


def aggregation(name: str) -> Callable[..., Tensor]:
    if name not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {name!r}; valid choices: {list(AGGREGATIONS)}")
    return AGGREGATIONS[name]


def token_normaliser(step_tokens: float, world_size: int = 1, accumulate: int = 1) -> float:
    """The `num_tokens` one process's update passes to "token" aggregation, so that a GRPO step's gradient
    is the gradient of (sum over every token of the step, on every process) / step_tokens.

        step_tokens: completion tokens in the loss over the whole step's rollout (one pass over its
            mini-batches), summed over all processes.
        An update's loss is  L_u = (sum of its tokens on this process) / num_tokens,
            num_tokens = step_tokens / (world_size x accumulate)
        because data-parallel strategies average gradients over the world_size processes (x 1/world_size)
        and Lightning divides each loss by accumulate_grad_batches (x 1/accumulate) when it accumulates.
        Over one pass the updates' gradients then add up (at the same parameters) to
            (1 / step_tokens) x gradient of (sum over all tokens of the step)

    e.g. 2 processes with 30 and 10 tokens, no accumulation: step_tokens = 40, num_tokens = 20; process 0's
    loss is its sum / 20, process 1's its sum / 20; their average is (sum of all 40 tokens) / 40.
    A step with no token in the loss gives step_tokens = 0, counted as 1 (its loss is 0 anyway).
    """
    if world_size < 1 or accumulate < 1:
        raise ValueError(f"world_size and accumulate must be >= 1, got {world_size}, {accumulate}")
    return max(float(step_tokens), 1.0) / (world_size * accumulate)
