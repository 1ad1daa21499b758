"""Where reasoning steps end, in tokens: rewards and labels given at a character of the completion
text (a step's last character) are placed on the token whose decoded text first reaches past it."""

from __future__ import annotations

import torch
from torch import Tensor


def token_ends(tokenizer, ids: list[int]) -> list[int]:
    """For each token of a completion, the length of the decoded text up to and including it."""
    prefixes = tokenizer.batch_decode([ids[: k + 1] for k in range(len(ids))], skip_special_tokens=True)
    return [len(p) for p in prefixes]


def char_to_token(ends: list[int], char_index: int) -> int | None:
    """Index of the first token whose decoded text ends past `char_index`; None if no token does."""
    return next((k for k, end in enumerate(ends) if end > char_index), None)


def step_reward_tensors(tokenizer, completion_ids: Tensor, completion_mask: Tensor, steps) -> tuple[Tensor, Tensor]:
    """Place each step's reward on the token that ends it: step_rewards [N, T] float, step_end_mask [N, T] bool.

    steps: per row, (index of the step's last character in the completion text, reward) pairs.
    A step whose character lies past the decoded text gets no entry.
    """
    N, T = completion_ids.shape
    step_rewards = torch.zeros(N, T)
    step_end_mask = torch.zeros(N, T, dtype=torch.bool)
    for i, row_steps in enumerate(steps):
        if not row_steps:
            continue
        ends = token_ends(tokenizer, completion_ids[i, completion_mask[i]].tolist())
        for char_idx, reward in row_steps:
            t = char_to_token(ends, char_idx)
            if t is not None:
                step_rewards[i, t] = reward
                step_end_mask[i, t] = True
    return step_rewards, step_end_mask
