"""The arithmetic task in GSM8K's format (task=arithmetic_lines): one step per line, a final ``#### <answer>``.

Prompt ``Q:7*3+12-5=``, solution::

    7*3=21
    21+12=33
    33-5=28
    #### 28

The same problems as `ArithmeticTask` (same seed, same splits) and the same exact step checker, read line by
line: a step is a non-blank line ending at its last non-space character, judged as ``a<op>b=c`` steps are; the
answer step is the number after the last ``####``. A multi-line task that trains on a CPU in minutes, where
Monte-Carlo step labels (step_labels=mc, steps=line) can be measured against the exact checker.
"""

from __future__ import annotations

import re

from .arithmetic import ArithmeticTask

_ANSWER_RE = re.compile(r"####[ \t]*(-?\d+)")


def _lines(steps: list[str], answer: str) -> str:
    return "\n".join(steps + [f"#### {answer}"])


class ArithmeticLinesTask(ArithmeticTask):
    """`ArithmeticTask` written one step per line with a final ``#### <answer>`` line (see the module docstring).

    Step rewards: each non-blank line before the last ``####`` is a step, checked as in `ArithmeticTask`; a
    last line not closed by a newline counts only when ``####`` follows on it (else it is a truncated step and
    gets no entry). The answer step ends at the answer's last digit (at the last ``#`` when no number follows).
    """

    alphabet = ArithmeticTask.alphabet + "#\n "
    answer_marker = "####"
    _answer_re = _ANSWER_RE
    _render = staticmethod(_lines)

    @staticmethod
    def _segments(body: str, answered: bool) -> list[tuple[str, int]]:
        segments: list[tuple[str, int]] = []
        start = 0
        while (end := body.find("\n", start)) >= 0:
            line = body[start:end].rstrip()
            if line.strip():
                segments.append((line, start + len(line) - 1))
            start = end + 1
        tail = body[start:].rstrip()
        if answered and tail.strip():
            segments.append((tail, start + len(tail) - 1))
        return segments
