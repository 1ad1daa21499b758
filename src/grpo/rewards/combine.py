"""A reward made of named, weighted components (the `reward` config group's `WeightedRewards`).

    r_i = sum over the components k that did not abstain on completion i of  w_k * r_k,i

Each component is a callable `fn(problems, completions) -> list[float | None]` (grpo.rewards.base).
- Abstention: None from a component leaves it out of that completion's sum. A completion on which
  every component abstains has no reward: an invalid value, handled like a NaN by
  `rollout.invalid_reward` (error: the run stops naming the components; zero: it counts as 0 and
  is counted in rollout/invalid_rewards).
- Process supervision (supervision=process): a component with `steps(problems, completions)` gives
  (index of the step's last character, reward) per step; an outcome-only component's value is the
  reward of the final step: it is added at the last step another component gave that completion (the
  verifier's outcome lands on the PRM's last step, PRIME / PURE: reward=prm_verifier), else at the
  completion's last character (nothing for an empty completion). With `outcome_apart` (an estimator
  that takes the outcome as a term of its own: supervision=process_min) the outcome-only components'
  weighted sum is `Scores.outcome` instead, one value per completion (0 where all abstained), when some
  component gives step rewards (alone, an outcome component's value stays the completion's one step).
  A completion's step rewards are the weighted sum of the components' at each character index. A
  completion with no step reward from any component has no steps (as a completion with no
  recognisable step): this is not an error.
- Logging: each component's mean over the completions where it did not abstain (process: of each
  completion's mean step reward) as `rollout/reward/<name>`; NaN when it abstained on all of them.

A component given as a string is imported by its dotted path (`mymodule.my_reward`): a user's function
plugs in from the command line, `+reward.components.mine.fn=mymodule.my_reward`.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from grpo.rewards.base import RewardError, call_reward, check_invalid, checked_outcome, checked_steps, reward_name, supervise


@dataclass(frozen=True)
class Component:
    name: str  # its key in reward.components: rollout/reward/<name>, and what errors call it
    fn: object  # fn(problems, completions) -> list[float | None]; maybe .steps, .bind, .state_dict
    weight: float = 1.0


@dataclass
class Scores:
    """One rollout's rewards, N completions."""

    rewards: list[float] | None = None  # outcome: [N] weighted sums
    steps: list[list[tuple[int, float]]] | None = None  # process: per completion, (char index, weighted sum) by index
    components: dict[str, list[float | None]] = field(default_factory=dict)  # per component: [N] value, None = abstained
    lowest: dict[str, list[float | None]] = field(default_factory=dict)  # process, per step component: [N] its lowest step reward
    outcome: list[float] | None = None  # process with outcome_apart: [N] weighted sum of the outcome-only components
    weights: tuple[float, float] | None = None  # with outcome: the total weight of the step components and of the outcome ones
    invalid: int = 0  # invalid values (and completions every component abstained on) counted as 0

    def means(self) -> dict[str, float]:
        """Per component: mean over the completions where it did not abstain (NaN if it abstained on all)."""
        out = {}
        for name, values in self.components.items():
            given = [v for v in values if v is not None]
            out[name] = sum(given) / len(given) if given else math.nan
        return out


def resolve(fn, where: str):
    """`fn`, or the object a dotted-path string names (`mymodule.my_reward`)."""
    if isinstance(fn, str):
        fn = _import(fn, where)
    if not (callable(fn) or callable(getattr(fn, "outcome", None))):
        raise ValueError(f"{where} must be a reward function fn(problems, completions) -> list[float | None] "
                         f"(a dotted path, or a _target_ node), got {fn!r}")
    return fn


def _import(path: str, where: str):
    """The object at a dotted path: the longest importable module prefix, then attributes."""
    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError as err:
            if cut == 1 or getattr(err, "name", None) != ".".join(parts[:cut]):  # missing, or broken inside: say why
                raise ValueError(f"{where}={path!r} cannot be imported ({err}); is its module on PYTHONPATH?") from None
            continue
        try:
            for name in parts[cut:]:
                obj = getattr(obj, name)
        except AttributeError:
            raise ValueError(f"{where}={path!r}: module {'.'.join(parts[:cut])!r} has no {'.'.join(parts[cut:])!r}") from None
        return obj
    raise ValueError(f"{where}={path!r} is not a dotted path module.name (e.g. mymodule.my_reward)")


class WeightedRewards:
    """components: {name: {fn: callable | "module.attr", weight: float (default 1.0)}}."""

    def __init__(self, components: Mapping):
        if not components:
            raise ValueError("reward.components is empty: give at least one, e.g. +reward.components.mine.fn=mymodule.my_reward")
        self.components: dict[str, Component] = {}
        for name, spec in components.items():
            if isinstance(spec, Component):
                self.components[name] = spec
                continue
            if not isinstance(spec, Mapping) or "fn" not in spec:
                raise ValueError(f"reward.components.{name} must have fn (and optionally weight), got {spec!r}")
            weight = spec.get("weight", 1.0)
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
                raise ValueError(f"reward.components.{name}.weight={weight!r} must be a finite number")
            unknown = set(spec) - {"fn", "weight"}
            if unknown:
                raise ValueError(f"reward.components.{name} has unknown keys {sorted(unknown)}: a component has fn and weight")
            self.components[name] = Component(str(name), resolve(spec["fn"], f"reward.components.{name}.fn"), float(weight))

    @classmethod
    def of(cls, reward) -> "WeightedRewards":
        """`reward` itself if it is a WeightedRewards, else a combination of it alone (weight 1, its own name)."""
        if isinstance(reward, WeightedRewards):
            return reward
        name = reward_name(reward)
        return cls({name: Component(name, reward, 1.0)})

    def supervise(self, process: bool) -> "WeightedRewards":
        """Tell each component that has `supervise` (the learned reward model) whether the rollout wants step rewards."""
        for name, c in self.components.items():
            self.components[name] = Component(c.name, supervise(c.fn, process), c.weight)
        return self

    def bind(self, task, policy=None, tokenizer=None) -> "WeightedRewards":
        """Bind each component that has `bind` (the learned reward model, a length penalty)."""
        for name, c in self.components.items():
            if hasattr(c.fn, "bind"):
                self.components[name] = Component(c.name, c.fn.bind(task, policy=policy, tokenizer=tokenizer), c.weight)
        return self

    # ---- scoring
    def score(self, problems, completions: list[str], *, process: bool = False, invalid: str = "error", ended=None,
              outcome_apart: bool = False) -> Scores:
        """The rollout's rewards: outcome (process False) or per-step (process True); see the module docstring.
        ended: per completion True (EOS) / False (cut by the length limit), for the components that take it.
        outcome_apart (process): outcome-only components go to Scores.outcome, not onto the last step."""
        scores = Scores()
        per_row = [dict() for _ in completions]  # process: char index -> weighted sum
        outcome_only = []  # process: (component, values) placed after the step components, on each row's last step
        stepwise = False  # process: some component gives step rewards
        for c in self.components.values():
            if process and hasattr(c.fn, "steps"):
                stepwise = True
                rows, bad = checked_steps(c.name, call_reward(c.fn, "steps", problems, completions, c.name, ended), completions, invalid)
                values = [sum(v for _, v in row) / len(row) if row else None for row in rows]
                scores.lowest[c.name] = [min(v for _, v in row) if row else None for row in rows]
                self._add(per_row, rows, c.weight)
            else:
                values, bad = checked_outcome(c.name, call_reward(c.fn, "outcome", problems, completions, c.name, ended), completions, invalid)
                outcome_only.append((c, values))
            scores.invalid += bad
            scores.components[c.name] = values
        if process and outcome_apart and stepwise:  # (outcome components alone: their value is the one step, below)
            scores.outcome = [self._weighted(i, {c.name: v for c, v in outcome_only}, [c for c, _ in outcome_only])
                              for i in range(len(completions))]
            scores.steps = [sorted(acc.items()) for acc in per_row]
            scores.weights = (sum(c.weight for c in self.components.values() if hasattr(c.fn, "steps")),
                              sum(c.weight for c, _ in outcome_only))
            return scores
        if process:  # an outcome value is the reward of the final step: the last step a step component gave, else the last character
            last = [max(acc) if acc else len(t) - 1 for acc, t in zip(per_row, completions)]
            for c, values in outcome_only:
                self._add(per_row, [[(i, v)] if v is not None and t else [] for i, t, v in zip(last, completions, values)], c.weight)
            scores.steps = [sorted(acc.items()) for acc in per_row]
            return scores
        abstained = [i for i in range(len(completions)) if all(v[i] is None for v in scores.components.values())]
        self._check_abstained(abstained, completions, invalid)
        scores.invalid += len(abstained)
        scores.rewards = [self._weighted(i, scores.components) for i in range(len(completions))]  # abstained: 0.0
        return scores

    @staticmethod
    def _add(per_row: list[dict], rows, weight: float) -> None:
        for acc, row in zip(per_row, rows):
            for char_index, value in row:
                acc[char_index] = weight * value if char_index not in acc else acc[char_index] + weight * value

    def _weighted(self, i: int, values: dict[str, list[float | None]], components=None) -> float:
        total = None  # the first term as is (a single weight-1 component's value exactly)
        for c in (self.components.values() if components is None else components):
            v = values[c.name][i]
            if v is not None:
                total = c.weight * v if total is None else total + c.weight * v
        return 0.0 if total is None else total

    def _check_abstained(self, rows: list[int], completions: list[str], invalid: str) -> None:
        if not rows or invalid == "zero":
            return
        if len(self.components) == 1:  # alone, abstaining is returning None where a reward is needed
            check_invalid(f"{next(iter(self.components))}.outcome", [(i, None) for i in rows], completions, invalid,
                          " (None abstains: no other reward component gives a value)")
        shown = "; ".join(f"completion {i} ({completions[i][:40]!r})" for i in rows[:3])
        raise RewardError(
            f"reward: every component ({', '.join(self.components)}) abstained (returned None) on {len(rows)} completion(s): "
            f"{shown}. A completion needs a value from at least one component: add one that scores it, or set "
            "rollout.invalid_reward=zero to count such completions as 0 (logged as rollout/invalid_rewards)."
        )

    # ---- a learned component's state travels in checkpoints (GRPOModule.on_save_checkpoint)
    def state_dict(self) -> dict:
        return {c.name: c.fn.state_dict() for c in self.components.values() if hasattr(c.fn, "state_dict")}

    def load_state_dict(self, state: dict) -> None:
        for name, part in state.items():
            self.components[name].fn.load_state_dict(part)


def learned_component(reward):
    """The component that learns (has `retrain`, e.g. LearnedReward): the reward itself, or the one among a
    WeightedRewards' components; None if there is none (rm_schedule=iterative then only resets the reference)."""
    if hasattr(reward, "retrain"):
        return reward
    found = [c for c in getattr(reward, "components", {}).values() if hasattr(c.fn, "retrain")]
    if len(found) > 1:
        raise ValueError(f"rm_schedule=iterative retrains one reward model; reward.components has {len(found)}: "
                         f"{', '.join(c.name for c in found)}")
    return found[0].fn if found else None
