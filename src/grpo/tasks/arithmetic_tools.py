"""Arithmetic on numbers too large to add by hand reliably, with a calculator to call (task=arithmetic_tools).

Prompt ``Q:512+347-289=`` (operands of 3 digits, sums up to 4), warm-start solution::

    512+347=859;<<859-289=570>>;A:570

A share `tool_share` of the steps are calculator calls in GSM8K's annotation (grpo.tools.inline.InlineFormat), whose
results are the calculator's own output; the other steps are worked by hand, column by column, forgetting each
carry or borrow with probability `flaw_prob` (so a 3-digit sum goes wrong in more places than the default task's
2-digit one). With tools=calculator the policy's ``<<EXPR=`` is answered by the tool; the warm start learns to
write calls, never their results (grpo.models.warmstart.encode_sft masks the format's result spans).

The checkers are `ArithmeticTask`'s: the answer after the last ``A:``; each step ``a<op>b=c;`` judged locally, a
call step ``<<a<op>b=c>>;`` judged as the step ``a<op>b=c`` (its result comes from the tool).
"""

from __future__ import annotations

import random
import re
import string

from grpo.tools.calculator import Calculator
from grpo.tools.inline import InlineFormat

from .arithmetic import ArithmeticTask, Op, _apply, _parse_prompt, _semicolons
from .base import Problem

_CALL_STEP_RE = re.compile(r"\s*<<(.*)>>\s*", re.DOTALL)


def hand_result(op: str, a: int, b: int, forget) -> int:
    """`a op b` worked column by column, where `forget()` is asked at each column that takes a carry (``+``) or
    a borrow (``-``) and True drops it. 95+7: units 5+7=12 (write 2, carry 1); tens 9+0+1=10 (write 0, carry 1):
    102; forgetting the first carry gives tens 9+0=9: 92. ``*`` and negative operands are exact."""
    if op == "*" or a < 0 or b < 0:
        return _apply(op, a, b)
    if op == "-" and a < b:
        return -hand_result("-", b, a, forget)
    result, place, carry = 0, 1, 0
    while a or b or carry:
        if carry and forget():
            carry = 0
        if op == "+":
            column = a % 10 + b % 10 + carry
            digit, carry = column % 10, column // 10
        else:
            column = a % 10 - b % 10 - carry
            digit, carry = column % 10, int(column < 0)
        result, place, a, b = result + digit * place, place * 10, a // 10, b // 10
    return result


class ArithmeticToolsTask(ArithmeticTask):
    """`ArithmeticTask` with `+`/`-` operations on operands in [min_operand, max_operand], values in [0, max_value],
    and warm-start solutions in which each step is a calculator call with probability `tool_share`."""

    alphabet = ArithmeticTask.alphabet + "<>/.() " + string.ascii_lowercase  # calls, results and error texts
    call_format = InlineFormat(tool="calculator")

    def __init__(
        self,
        num_ops_min: int = 2,
        num_ops_max: int = 3,
        min_operand: int = 100,
        max_operand: int = 999,
        max_value: int = 9999,
        train_size: int = 50000,
        heldout_size: int = 1000,
        seed: int = 0,
        flaw_prob: float = 0.3,
        tool_share: float = 0.5,
    ) -> None:
        super().__init__(num_ops_min, num_ops_max, max_operand, train_size, heldout_size, seed, flaw_prob)
        if not 1 <= min_operand <= max_operand:
            raise ValueError(f"need 1 <= min_operand <= max_operand, got {min_operand}, {max_operand}")
        if max_value < 2 * max_operand:
            raise ValueError(f"max_value={max_value} must be at least 2 * max_operand = {2 * max_operand}")
        if not 0.0 <= tool_share <= 1.0:
            raise ValueError(f"tool_share must be in [0, 1], got {tool_share} (0: no step is a calculator call)")
        self.min_operand, self.max_value, self.tool_share = min_operand, max_value, tool_share
        self._calculator = Calculator()

    def _sample(self, rng: random.Random) -> tuple[int, list[Op]]:
        n_ops = rng.randint(self.num_ops_min, self.num_ops_max)
        first = value = rng.randint(self.min_operand, self.max_operand)
        ops: list[Op] = []
        while len(ops) < n_ops:
            op = rng.choice("+-")
            room_add, room_sub = min(self.max_operand, self.max_value - value), min(self.max_operand, value)
            if op == "+" and room_add < self.min_operand:
                op = "-"
            elif op == "-" and room_sub < self.min_operand:
                op = "+"
            b = rng.randint(self.min_operand, room_add if op == "+" else room_sub)
            ops.append((op, b))
            value = _apply(op, value, b)
        return first, ops

    def flawed_solution(self, problem: Problem, rng: random.Random) -> str:
        """Each step a call ``<<a<op>b=c>>`` (prob. `tool_share`; c the calculator's exact output) or worked by hand
        (`hand_result`, each carry/borrow forgotten with prob. `flaw_prob`); a flawed value propagates."""
        first, ops = _parse_prompt(problem.prompt)
        fmt, value, steps = self.call_format, first, []
        for op, b in ops:
            expression = f"{value}{op}{b}"
            if rng.random() < self.tool_share:
                output, error = self._calculator(expression)
                assert not error, output
                steps.append(fmt.open + expression + fmt.close + fmt.result(output))
                value = int(output)
            else:
                value = hand_result(op, value, b, lambda: rng.random() < self.flaw_prob)
                steps.append(f"{expression}={value}")
        return _semicolons(steps, str(value))

    @staticmethod
    def _segments(body: str, answered: bool) -> list[tuple[str, int]]:
        """`ArithmeticTask`'s steps, a call step ``<<a+b=c>>`` read as the step ``a+b=c``."""
        segments = ArithmeticTask._segments(body, answered)
        return [(m.group(1) if (m := _CALL_STEP_RE.fullmatch(text)) else text, end) for text, end in segments]
