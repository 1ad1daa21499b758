"""The reward component interface, and the checks every value passes before it reaches an advantage.

A reward component (one entry of `reward.components`, or the whole `reward` node) is a callable

    fn(problems: list[Problem], completions: list[str]) -> list[float | None]

`problems[i]` is the `grpo.tasks.base.Problem` completion i answers (each prompt repeated G times; it
carries `.prompt`, `.answer`, `.solution`, `.messages` and `.metadata`, a dataset row's other columns).
It returns one float per completion, or None where it abstains (has no opinion on that completion).
Optional, where a component needs them:

- `fn.steps(problems, completions)` -> per completion, a list of (index of the step's last character in
  the completion text, reward) per reasoning step: process supervision (supervision=process);
- `fn.supervise(process: bool)` -> the component told, when the run is composed (before the policy loads),
  whether the rollout's advantage estimator wants step rewards (`needs_step_rewards`: supervision=process)
  or one reward per output; the learned reward model becomes a PRM or an ORM from it;
- `fn.bind(task, policy=None, tokenizer=None)` -> the component ready to score, called once when the run
  is built (the learned reward model trains on the policy's samples; a length penalty counts tokens);
- `fn.state_dict()` / `fn.load_state_dict(state)`: what a checkpoint must carry (a learned model's weights).

A component's `__call__`, `outcome` or `steps` that takes an `ended` keyword gets, per completion, True if the
policy wrote EOS, False if the length limit cut it (the rollout's `truncated`), or None where it is not known:
the learned reward model shows the EOS to its network and gives a cut tail the lowest step reward.

Objects written for the earlier reward-source interface, with an `outcome(problems, completions)` method
(e.g. `VerifierReward`, `LearnedReward`), are called through `outcome`. `grpo.rewards.combine` sums
several named components with weights.

The checks: a component that raises or returns the wrong number of values stops the run naming the
component (`RewardError`); a NaN, inf or non-numeric value stops it too, or, with `invalid: zero`
(rollout.invalid_reward), counts as 0 and is counted (logged as `rollout/invalid_rewards`).
"""

from __future__ import annotations

import inspect
import math
from typing import Protocol, Sequence

from torch import Tensor


class RewardComponent(Protocol):
    def __call__(self, problems, completions: list[str]) -> Sequence[float | None]: ...


RewardSource = RewardComponent  # the earlier name


class RewardError(ValueError):
    """A reward component returned something that cannot enter an advantage."""


def reward_name(component) -> str:
    """A component's own name: its `name` attribute set on the object or on its own class (a subclass is a
    different reward: it does not inherit its parent's name), else its class or function name."""
    own = vars(component).get("name") if hasattr(component, "__dict__") else None
    own = own or type(component).__dict__.get("name")
    if isinstance(own, str) and own:
        return own
    return getattr(component, "__name__", None) or type(component).__qualname__


def supervise(component, process: bool):
    """`component.supervise(process)` where it has one (it learns whether the rollout wants step rewards), else itself."""
    hook = getattr(component, "supervise", None)
    return hook(process) if callable(hook) else component


def takes_endings(fn) -> bool:
    """`fn` accepts an `ended` keyword (or **kwargs)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "ended" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def call_reward(component, method: str, problems, completions: list[str], name: str | None = None, ended=None):
    """`component.<method>(problems, completions)` (method "outcome": the component itself where it has no
    `outcome`), with `ended=` where it takes it and it is known; an exception it raises stops the run naming
    the component."""
    fn = getattr(component, method, component if method == "outcome" else None)
    try:
        if ended is not None and takes_endings(fn):
            return fn(problems, completions, ended=ended)
        return fn(problems, completions)
    except RewardError:
        raise
    except Exception as err:
        raise RewardError(f"reward {name or reward_name(component)}.{method} raised {type(err).__name__}: {err}") from err


def _as_float(value) -> float | None:
    """The value as a finite float, or None (NaN, inf, not a number, a bool or str)."""
    if isinstance(value, (bool, str)) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def check_invalid(name: str, bad: list, completions, invalid: str, note: str = "") -> None:
    """Raise naming `name` and the (completion index, value) pairs in `bad`, unless `invalid` is "zero"."""
    if bad and invalid != "zero":
        shown = "; ".join(f"completion {i} ({completions[i][:40]!r}): {v!r}" for i, v in bad[:3])
        raise RewardError(
            f"reward {name} returned {len(bad)} value(s) that are not finite numbers: {shown}{note}. "
            "Fix the reward function, or set rollout.invalid_reward=zero to count such values as 0 (logged as rollout/invalid_rewards)."
        )


def checked_outcome(name: str, values, completions: list[str], invalid: str = "error") -> tuple[list[float | None], int]:
    """(one float or None (abstains) per completion, count of invalid values replaced by 0) for a
    component's outcome `values`. A wrong count always stops the run; NaN/inf/non-numeric per `invalid`."""
    items = values.tolist() if isinstance(values, Tensor) else values
    if isinstance(items, (int, float, str)) or not hasattr(items, "__len__") or len(items) != len(completions):
        got = f"{len(items)} values" if hasattr(items, "__len__") and not isinstance(items, str) else repr(items)
        raise RewardError(
            f"reward {name}.outcome returned {got} for {len(completions)} completions; "
            "it must return one float per completion (None where it abstains)"
        )
    numbers = [None if v is None else _as_float(v) for v in items]
    bad = [(i, v) for i, (v, n) in enumerate(zip(items, numbers)) if v is not None and n is None]
    check_invalid(f"{name}.outcome", bad, completions, invalid)
    return [0.0 if v is not None and n is None else n for v, n in zip(items, numbers)], len(bad)


def checked_steps(name: str, steps, completions: list[str], invalid: str = "error") -> tuple[list[list[tuple[int, float]]], int]:
    """(per-step rewards with invalid values replaced by 0, count of them) for a component's `steps`."""
    if isinstance(steps, str) or not hasattr(steps, "__len__") or len(steps) != len(completions):
        got = f"{len(steps)} rows" if hasattr(steps, "__len__") and not isinstance(steps, str) else repr(steps)
        raise RewardError(f"reward {name}.steps returned {got} for {len(completions)} completions; it must return one list of (char index, reward) per completion")
    out, bad = [], []
    for i, row in enumerate(steps):
        kept = []
        for char_index, value in row:
            number = _as_float(value)
            if number is None:
                bad.append((i, value))
            kept.append((int(char_index), 0.0 if number is None else number))
        out.append(kept)
    check_invalid(f"{name}.steps", bad, completions, invalid)
    return out, len(bad)
