"""Built-in reward components: `fn(problems, completions) -> list[float | None]` (grpo.rewards.base), each a
class configured by `_target_` with its options as init args (conf/reward/component/*.yaml).

- `MathVerify`: 1.0 if the completion's final answer equals `problem.answer` mathematically
  (math-verify: LaTeX, \\boxed{}, fractions, decimals, plain numbers), else 0.0 (no answer: 0.0).
- `HashAnswer`: 1.0 if the number after the completion's last `####` equals `problem.answer` (both
  normalised: "1,000" == "1000", "3.50" == "3.5"), else 0.0: GSM8K's answer line.
- `FormatMatch`: 1.0 if the completion matches a regular expression (re.search), else 0.0; by default
  some reasoning, then a final \\boxed{...}.
- `OverlongPenalty`: DAPO's soft overlong punishment (arXiv 2503.14476, eq. 13), in tokens.
- `VerifiedAnswer`: the task's final-answer verifier alone (no step checker): beside a PRM its value is
  the reward of the final step (reward=prm_verifier).
"""

from __future__ import annotations

import re

from grpo.tasks.answers import after_hashes, equivalent
from grpo.tasks.numbers import normalize_number


class VerifiedAnswer:
    """1.0 if `task.verify` accepts the completion's final answer, else 0.0: an outcome-only component (it has no
    `steps`), so under supervision=process it lands on the completion's last step (grpo.rewards.combine)."""

    name = "verifier"  # rollout/reward/verifier

    def __init__(self):
        self.task = None

    def bind(self, task, policy=None, tokenizer=None) -> "VerifiedAnswer":
        self.task = task
        return self

    def __call__(self, problems, completions: list[str]) -> list[float]:
        from grpo.tasks.base import verified

        return [float(verified(self.task, p, c)) for p, c in zip(problems, completions)]


class MathVerify:
    """Answer correctness by math-verify (`grpo.tasks.answers.equivalent(problem.answer, completion)`)."""

    def __call__(self, problems, completions: list[str]) -> list[float]:
        return [float(equivalent(p.answer, c)) for p, c in zip(problems, completions)]


class HashAnswer:
    """GSM8K's `#### <number>` answer line: 1.0 if its number equals the problem's answer, else 0.0."""

    def __call__(self, problems, completions: list[str]) -> list[float]:
        return [float(after_hashes(c) == normalize_number(p.answer)) for p, c in zip(problems, completions)]


BOXED_LAST = r"(?s)\S.*\\boxed\{.+\}\s*$"  # something before it (reasoning), then \boxed{...} ends the text


class FormatMatch:
    """1.0 if `re.search(pattern, completion)`, else 0.0. Anchor with ^ / $ and use (?s) as needed."""

    def __init__(self, pattern: str = BOXED_LAST):
        try:
            self.pattern = re.compile(pattern)
        except re.error as err:
            raise ValueError(f"reward format pattern {pattern!r} is not a regular expression: {err}") from None

    def __call__(self, problems, completions: list[str]) -> list[float]:
        return [float(self.pattern.search(c) is not None) for c in completions]


def overlong_penalty(length: int, max_length: int, buffer: int) -> float:
    """DAPO eq. 13, with L_max = max_length and L_cache = buffer, for a completion of `length` tokens:

        0                                       if |y| <= L_max - L_cache
        ((L_max - L_cache) - |y|) / L_cache     if L_max - L_cache < |y| <= L_max   (0 down to -1)
        -1                                      if |y| > L_max

    e.g. L_max 20, L_cache 8: |y| 12 -> 0; 16 -> (12 - 16) / 8 = -0.5; 20 -> -1; 21 -> -1.
    """
    safe = max_length - buffer
    if length <= safe:
        return 0.0
    if length <= max_length:
        return (safe - length) / buffer
    return -1.0


class OverlongPenalty:
    """DAPO's soft overlong punishment of completions in the last `buffer` tokens before `max_new_tokens`.

    |y| is the completion's length in tokens of the policy's tokenizer (given by `bind`): the completion
    text encoded again, without special tokens, so an end-of-sequence token is not counted. For a
    character-level tokenizer that is exactly the number of generated tokens; for a subword tokenizer
    decoding then encoding may differ from the generated ids by a token or so. Add it to a weighted
    reward (weight 1 as in DAPO): `+reward/component@reward.components.overlong=overlong`.
    """

    def __init__(self, max_new_tokens: int, buffer: int):
        if not 0 < buffer <= max_new_tokens:
            raise ValueError(f"overlong penalty: buffer={buffer} must be in [1, max_new_tokens={max_new_tokens}]")
        self.max_new_tokens, self.buffer = max_new_tokens, buffer
        self.tokenizer = None

    def bind(self, task, policy=None, tokenizer=None) -> "OverlongPenalty":
        if tokenizer is None:
            raise ValueError("the overlong penalty counts tokens: bind(task, tokenizer=...) with the policy's tokenizer")
        self.tokenizer = tokenizer
        return self

    def __call__(self, problems, completions: list[str]) -> list[float]:
        if self.tokenizer is None:
            raise RuntimeError("OverlongPenalty was not bound to a tokenizer (bind(task, tokenizer=...))")
        if not completions:
            return []
        lengths = [len(ids) for ids in self.tokenizer(list(completions), add_special_tokens=False).input_ids]
        return [overlong_penalty(n, self.max_new_tokens, self.buffer) for n in lengths]
