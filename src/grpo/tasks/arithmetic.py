"""Multi-step integer arithmetic with explicit, checkable steps (the built-in default task).

Prompt ``Q:7*3+12-5=``, solution ``7*3=21;21+12=33;33-5=28;A:28``. Each operation is one
step ``a<op>b=c;`` (ending at its ``;``) whose left operand is the previous result; the
final step ``A:<answer>`` ends at the answer's last digit.
"""

from __future__ import annotations

import random
import re

from .base import Problem, Task

MAX_VALUE = 199  # every intermediate value of a generated problem lies in [0, MAX_VALUE]
_MAX_DIGITS = 30  # longer numbers in a completion are treated as unparseable (never int() them)

_PROMPT_RE = re.compile(r"Q:(\d+)((?:[-+*]\d+)+)=")
_OP_RE = re.compile(r"([-+*])(\d+)")
_STEP_RE = re.compile(r"\s*(-?\d+)\s*([-+*])\s*(\d+)\s*=\s*(-?\d+)\s*")
_ANSWER_RE = re.compile(r"A:[ \t]*(-?\d+)")

Op = tuple[str, int]  # (operator, right operand)


def needs_carry_or_borrow(op: str, a: int, b: int) -> bool:
    """True iff column arithmetic for ``a op b`` needs a carry or a borrow.

    ``+``: the units digits sum to >= 10. ``-`` (only for a >= b >= 0, i.e. ordinary column
    subtraction): the units digit of a is smaller than that of b. ``*`` and negative
    operands never count.
    """
    if a < 0 or b < 0:
        return False
    if op == "+":
        return a % 10 + b % 10 >= 10
    if op == "-":
        return a >= b and a % 10 < b % 10
    return False


def _apply(op: str, a: int, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


def _norm_int(s: str) -> str:
    """Canonical decimal string of an integer literal without calling int() (no digit limit)."""
    neg = s.startswith("-")
    digits = s.lstrip("-").lstrip("0") or "0"
    return "-" + digits if neg and digits != "0" else digits


def _parse_prompt(prompt: str) -> tuple[int, list[Op]]:
    """First number and list of (op, operand) of a prompt ``Q:<n>(<op><n>)+=``."""
    m = _PROMPT_RE.fullmatch(prompt)
    if m is None:
        raise ValueError(f"not an arithmetic prompt: {prompt!r}")
    return int(m.group(1)), [(op, int(b)) for op, b in _OP_RE.findall(m.group(2))]


def _semicolons(steps: list[str], answer: str) -> str:
    """``7*3=21;21+12=33;A:33``"""
    return "".join(f"{step};" for step in steps) + f"A:{answer}"


def _format(first: int, ops: list[Op], flaws: list[int] | None = None, render=_semicolons) -> tuple[str, str, str]:
    """(prompt, answer, solution); ``flaws[j]`` is added to step j's result and propagates."""
    value, steps = first, []
    for j, (op, b) in enumerate(ops):
        c = _apply(op, value, b) + (flaws[j] if flaws else 0)
        steps.append(f"{value}{op}{b}={c}")
        value = c
    prompt = f"Q:{first}" + "".join(f"{op}{b}" for op, b in ops) + "="
    return prompt, str(value), render(steps, str(value))


class ArithmeticTask(Task):
    """Multi-step integer arithmetic, generated deterministically from `seed`.

    The first operation is ``*`` of two operands in 2..9, or ``+``/``-``; later operations
    are ``+``/``-`` with operands in 1..max_operand, so precedence and left-to-right
    evaluation agree. Intermediate values stay in [0, 199]. Operands are uniform within
    the allowed range, so roughly 40% of ``+``/``-`` steps need a carry or borrow.

    Splits: unique prompts are drawn in order from ``random.Random(seed)``; the first
    `heldout_size` form the held-out split and the next `train_size` the training pool, so
    the splits are disjoint, deduplicated, and the held-out split does not depend on
    `train_size`. ValueError if the problem space is too small for both.

    Step rewards (process supervision) judge each step's *local* validity, like a process
    reward model: step j (``a<op>b=c;``) is right iff it parses, its operator and right
    operand equal the question's j-th operation, its left operand equals the completion's
    OWN previous result (the question's first number for j=1; if the previous step did not
    parse, the true running value) and ``a op b == c``. So only the step that makes a
    mistake is wrong; later steps that correctly continue from the wrong value are right.
    Steps beyond the question's operations are wrong. The final step (text after the last
    ``A:``) is right iff its number equals the true answer. Any text before the last ``A:``
    that is not closed by ``;`` still counts as a step (closed by the answer); an unclosed
    tail with no ``A:`` after it (a truncated step) gets no entry.
    """

    alphabet = "0123456789+-*=;:QA"
    answer_marker = "A:"  # the final answer follows the last one
    _answer_re = _ANSWER_RE
    _render = staticmethod(_semicolons)

    def __init__(
        self,
        num_ops_min: int = 2,
        num_ops_max: int = 3,
        max_operand: int = 99,
        train_size: int = 50000,
        heldout_size: int = 1000,
        seed: int = 0,
        flaw_prob: float = 0.6,
    ) -> None:
        if not 1 <= num_ops_min <= num_ops_max:
            raise ValueError(f"need 1 <= num_ops_min <= num_ops_max, got {num_ops_min}, {num_ops_max}")
        if max_operand < 1:
            raise ValueError(f"max_operand must be >= 1, got {max_operand}")
        if train_size < 0 or heldout_size < 0:
            raise ValueError(f"sizes must be >= 0, got train_size={train_size}, heldout_size={heldout_size}")
        if not 0.0 <= flaw_prob <= 1.0:
            raise ValueError(f"flaw_prob must be in [0, 1], got {flaw_prob}")
        self.num_ops_min, self.num_ops_max = num_ops_min, num_ops_max
        self.max_operand = max_operand
        self.train_size, self.heldout_size = train_size, heldout_size
        self.seed, self.flaw_prob = seed, flaw_prob
        self._splits: tuple[list[Problem], list[Problem]] | None = None

    # ---- problem generation -------------------------------------------------------------
    def _sample(self, rng: random.Random) -> tuple[int, list[Op]]:
        """One random question: first number and its operations."""
        n_ops = rng.randint(self.num_ops_min, self.num_ops_max)
        kind = rng.choice("*+-")
        if kind == "*":
            first, ops = rng.randint(2, 9), [("*", rng.randint(2, 9))]
            value = first * ops[0][1]
        else:
            first = value = rng.randint(1, min(self.max_operand, MAX_VALUE))
            ops = []
        while len(ops) < n_ops:
            op = kind if not ops and kind != "*" else rng.choice("+-")
            room_add, room_sub = min(self.max_operand, MAX_VALUE - value), min(self.max_operand, value)
            if op == "+" and room_add < 1:
                op = "-"
            elif op == "-" and room_sub < 1:
                op = "+"
            b = rng.randint(1, room_add if op == "+" else room_sub)
            ops.append((op, b))
            value = _apply(op, value, b)
        return first, ops

    def _generate(self) -> tuple[list[Problem], list[Problem]]:
        if self._splits is None:
            total = self.train_size + self.heldout_size
            rng, seen, problems = random.Random(self.seed), set(), []
            max_attempts = 20 * total + 1000
            for _ in range(max_attempts):
                if len(problems) >= total:
                    break
                prompt, answer, solution = _format(*self._sample(rng), render=self._render)
                if prompt not in seen:
                    seen.add(prompt)
                    problems.append(Problem(prompt, answer, solution))
            if len(problems) < total:
                raise ValueError(
                    f"ArithmeticTask: only {len(problems)} unique problems found in {max_attempts} draws, "
                    f"need train_size + heldout_size = {total}; the problem space is too small: lower the "
                    f"sizes or raise max_operand / num_ops_max"
                )
            self._splits = (problems[self.heldout_size :], problems[: self.heldout_size])
        return self._splits

    def train_problems(self) -> list[Problem]:
        return list(self._generate()[0])

    def heldout_problems(self) -> list[Problem]:
        return list(self._generate()[1])

    # ---- supervised warm start ----------------------------------------------------------
    def flawed_solution(self, problem: Problem, rng: random.Random) -> str:
        """Worked solution where each needed carry/borrow is dropped with prob. `flaw_prob`.

        A dropped carry gives result - 10, a dropped borrow result + 10; the flawed value
        propagates (later steps are computed correctly from it). ``*`` steps are always right.
        """
        first, ops = _parse_prompt(problem.prompt)
        value, flaws = first, []
        for op, b in ops:
            flaw = 0
            if needs_carry_or_borrow(op, value, b) and rng.random() < self.flaw_prob:
                flaw = -10 if op == "+" else 10
            flaws.append(flaw)
            value = _apply(op, value, b) + flaw
        return _format(first, ops, flaws, render=self._render)[2]

    def sft_examples(self, n: int, seed: int) -> list[tuple[str, str]]:
        """`n` (prompt, flawed solution) pairs drawn from the train pool (without replacement if possible)."""
        rng, train = random.Random(seed), self._generate()[0]
        picked = rng.sample(train, n) if n <= len(train) else rng.choices(train, k=n)
        return [(p.prompt, self.flawed_solution(p, rng)) for p in picked]

    # ---- checkers -----------------------------------------------------------------------
    def extract_answer(self, completion: str) -> str | None:
        """Integer after the LAST ``A:`` (`answer_marker`; optional leading ``-``, leading zeros dropped), else None."""
        marker = self.answer_marker
        m = self._answer_re.match(completion, completion.rfind(marker)) if marker in completion else None
        return _norm_int(m.group(1)) if m else None

    def step_rewards(self, problem: Problem, completion: str) -> list[tuple[int, float]]:
        """(last-char index, 1.0/0.0) per step; see the class docstring for the scoring rule."""
        first, ops = _parse_prompt(problem.prompt)
        true_values = [first]
        for op, b in ops:
            true_values.append(_apply(op, true_values[-1], b))

        k = completion.rfind(self.answer_marker)
        segments = self._segments(completion if k < 0 else completion[:k], answered=k >= 0)

        rewards: list[tuple[int, float]] = []
        prev = first
        for j, (text, end) in enumerate(segments):
            m = _STEP_RE.fullmatch(text)
            if m and max(len(g) for g in m.groups()) <= _MAX_DIGITS:
                a, op, b, c = int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))
                ok = j < len(ops) and (op, b) == ops[j] and a == prev and _apply(op, a, b) == c
                prev = c
            else:
                ok = False
                prev = true_values[j + 1] if j < len(ops) else prev
            rewards.append((end, 1.0 if ok else 0.0))
        if k >= 0:
            m = self._answer_re.match(completion, k)
            if m:
                rewards.append((m.end() - 1, 1.0 if _norm_int(m.group(1)) == problem.answer else 0.0))
            else:
                rewards.append((k + len(self.answer_marker) - 1, 0.0))
        return rewards

    @staticmethod
    def _segments(body: str, answered: bool) -> list[tuple[str, int]]:
        """(step text, index of its last character) of the text before the answer: each ``;`` closes a step; a
        non-blank unclosed tail is a step when the answer follows (`answered`), else a truncated step (none)."""
        segments: list[tuple[str, int]] = []
        start = 0
        while (end := body.find(";", start)) >= 0:
            segments.append((body[start:end], end))
            start = end + 1
        tail = body[start:].rstrip()
        if answered and tail.strip():
            segments.append((tail, start + len(tail) - 1))
        return segments
