"""The task interface the rollout and reward code rely on."""

from __future__ import annotations

from abc import ABC, abstractmethod
import random
from dataclasses import dataclass, field
from typing import Any, Mapping


@dataclass(frozen=True)
class Problem:
    """One problem: what the model sees, the canonical answer and a correct worked solution.

    `prompt` is the text the policy is given (after the `prompt` config group has rendered it: a plain
    template or the tokenizer's chat template). `messages` is the problem as a conversation (role /
    content dicts), for tasks whose rows are conversations; None: one user turn holding the question.
    `metadata` holds a dataset row's other columns: reward functions read them.
    """

    prompt: str  # text the model sees, e.g. "Q:7*3+12-5="
    answer: str  # canonical final answer, e.g. "28"
    solution: str  # a correct worked solution (completion target), e.g. "7*3=21;21+12=33;33-5=28;A:28"
    messages: tuple[Mapping[str, str], ...] | None = field(default=None, compare=False)
    metadata: Mapping[str, Any] = field(default_factory=dict, compare=False)


class Task(ABC):
    """A source of problems plus an outcome checker and a process (per-step) checker.

    Completions passed to `extract_answer`, `verify` and `step_rewards` are the generated
    text after the prompt (special tokens stripped); they may be any string, and these
    methods must never raise on them.
    """

    alphabet: str | None = None  # characters a char-level tokenizer must cover (None: any)
    # how the worked solutions of `sft_examples` write tool calls (a grpo.tools.base.CallFormat): the warm start
    # learns the calls but not the tools' results (their spans are masked); None: the solutions call no tool
    call_format = None

    @abstractmethod
    def train_problems(self) -> list[Problem]:
        """The training pool (shares no prompt with the held-out split)."""

    @abstractmethod
    def heldout_problems(self) -> list[Problem]:
        """The held-out evaluation split."""

    @abstractmethod
    def sft_examples(self, n: int, seed: int) -> list[tuple[str, str]]:
        """`n` (prompt, completion) pairs from the train pool for a supervised warm start."""

    @abstractmethod
    def extract_answer(self, completion: str) -> str | None:
        """The final answer the completion states (normalised), None if it states none."""

    def verify(self, problem: Problem, completion: str) -> bool:
        """True iff the completion's final answer equals the problem's answer."""
        return self.extract_answer(completion) == problem.answer

    @abstractmethod
    def step_rewards(self, problem: Problem, completion: str) -> list[tuple[int, float]]:
        """Per reasoning step: (index of the step's last character in `completion`, 1.0 right / 0.0 wrong).

        Empty list if the completion has no recognisable step.
        """


def verified(task: Task, problem: Problem, completion: str) -> bool:
    """`task.verify(problem, completion)`, checked to be a bool (a clear error names the task otherwise)."""
    value = task.verify(problem, completion)
    if isinstance(value, bool) or type(value).__name__ == "bool_":  # numpy's bool too
        return bool(value)
    raise TypeError(
        f"{type(task).__qualname__}.verify must return a bool (True: the answer is right), got {type(value).__name__} "
        f"{value!r} for the completion {completion[:60]!r}"
    )


def split_off(problems: list[Problem], fraction: float, seed: int) -> tuple[list[Problem], list[Problem]]:
    """(rest, held out): a seeded `fraction` of `problems` held out, both in their original order."""
    order = list(range(len(problems)))
    random.Random(seed).shuffle(order)
    held = set(order[: round(len(problems) * fraction)])
    return [p for i, p in enumerate(problems) if i not in held], [p for i, p in enumerate(problems) if i in held]


def draw(pool: list[Problem], n: int, seed: int) -> list[Problem]:
    """`n` problems of `pool`, seeded: without replacement when the pool holds enough, else with."""
    rng = random.Random(seed)
    return rng.sample(pool, n) if n <= len(pool) else rng.choices(pool, k=n)
