"""The reward interface every reward source implements, and the checks its values pass.

A reward source (the `reward` config group) is bound once to the task and the starting policy, then
scores each rollout:

- `outcome(problems, completions)` -> N rewards, one per completion (outcome supervision);
- `steps(problems, completions)` -> per completion, (index of the step's last character in the
  completion text, reward) per reasoning step (process supervision; sources that cannot judge
  steps raise ValueError saying so).

`problems[i]` is the `grpo.tasks.base.Problem` that completion i answers (each prompt repeated G
times). The values are checked here before they reach an advantage: a wrong count, or a NaN, inf or
non-numeric value stops the run naming the source and the value (`RewardError`), or, with
`invalid: zero`, counts as 0 and is logged (`rollout/invalid_rewards`).
"""

from __future__ import annotations

import math
from typing import Protocol, Sequence

import torch
from torch import Tensor


class RewardSource(Protocol):
    def bind(self, task, policy=None, tokenizer=None) -> "RewardSource": ...

    def outcome(self, problems, completions: list[str]) -> Tensor | Sequence[float]: ...

    def steps(self, problems, completions: list[str]) -> list[list[tuple[int, float]]]: ...


class RewardError(ValueError):
    """A reward source returned something that cannot enter an advantage."""


def reward_name(source) -> str:
    return getattr(source, "name", None) or type(source).__qualname__


def call_reward(source, method: str, problems, completions: list[str]):
    """`source.<method>(problems, completions)`; an exception it raises stops the run naming the source."""
    try:
        return getattr(source, method)(problems, completions)
    except RewardError:
        raise
    except Exception as err:
        raise RewardError(f"reward {reward_name(source)}.{method} raised {type(err).__name__}: {err}") from err


def _as_float(value) -> float | None:
    """The value as a finite float, or None (NaN, inf, not a number, a bool or str)."""
    if isinstance(value, (bool, str)) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _bad(source, where: str, bad: list, completions, invalid: str) -> None:
    if bad and invalid != "zero":
        shown = "; ".join(f"completion {i} ({completions[i][:40]!r}): {v!r}" for i, v in bad[:3])
        raise RewardError(
            f"reward {reward_name(source)}.{where} returned {len(bad)} value(s) that are not finite numbers: {shown}. "
            "Fix the reward function, or set rollout.invalid_reward=zero to count such values as 0 (logged as rollout/invalid_rewards)."
        )


def checked_outcome(source, values, completions: list[str], invalid: str = "error") -> tuple[Tensor, int]:
    """(rewards [N] float32, count of invalid values replaced by 0) for `source.outcome`'s `values`."""
    items = values.tolist() if isinstance(values, Tensor) else values
    if isinstance(items, (int, float)) or not hasattr(items, "__len__") or len(items) != len(completions):
        got = f"{len(items)} values" if hasattr(items, "__len__") else repr(items)
        raise RewardError(f"reward {reward_name(source)}.outcome returned {got} for {len(completions)} completions; it must return one float per completion")
    numbers = [_as_float(v) for v in items]
    bad = [(i, v) for i, (v, n) in enumerate(zip(items, numbers)) if n is None]
    _bad(source, "outcome", bad, completions, invalid)
    return torch.tensor([0.0 if n is None else n for n in numbers]), len(bad)


def checked_steps(source, steps, completions: list[str], invalid: str = "error") -> tuple[list[list[tuple[int, float]]], int]:
    """(per-step rewards with invalid values replaced by 0, count of them) for `source.steps`'s `steps`."""
    if not hasattr(steps, "__len__") or len(steps) != len(completions):
        got = f"{len(steps)} rows" if hasattr(steps, "__len__") else repr(steps)
        raise RewardError(f"reward {reward_name(source)}.steps returned {got} for {len(completions)} completions; it must return one list of (char index, reward) per completion")
    out, bad = [], []
    for i, row in enumerate(steps):
        kept = []
        for char_index, value in row:
            number = _as_float(value)
            if number is None:
                bad.append((i, value))
            kept.append((int(char_index), 0.0 if number is None else number))
        out.append(kept)
    _bad(source, "steps", bad, completions, invalid)
    return out, len(bad)
