"""GSM8K-style grade-school math word problems read from JSONL files.

Each line is ``{"question": ..., "answer": ...}`` where the answer is a worked solution
(with calculator annotations ``<<48/2=24>>``) whose last line is ``#### <number>``.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal, InvalidOperation
from pathlib import Path

from .base import Problem, Task, draw, split_off
from .numbers import MAX_NUM_CHARS as _MAX_NUM_CHARS
from .numbers import NUM as _NUM
from .numbers import NUMBER_RE as _NUMBER_RE
from .numbers import normalize_number

_ANNOTATION_RE = re.compile(r"<<[^>]*>>")
_OPS = "-+*/x×÷"  # "-" first: literal inside a regex character class
_BEFORE_EXPR = "+-*/×÷)"  # an equation right after one of these is part of a longer expression
# a maximal chain of numbers and operators ("$" allowed before numbers), then "= <number>"
_CHAIN_RE = re.compile(rf"(?<![\d.,])\$?-?{_NUM}(?:\s*[{_OPS}]\s*\$?{_NUM})*")
_RESULT_RE = re.compile(rf"\s*=\s*\$?(-?{_NUM})")
_TERM_RE = re.compile(rf"([{_OPS}]?)\s*\$?(-?{_NUM})")


def _to_decimal(text: str) -> Decimal | None:
    s = text.replace(",", "").replace("$", "")
    if len(s) > _MAX_NUM_CHARS:
        return None
    try:
        return Decimal(s)
    except InvalidOperation:
        return None


def _evaluate(expr: str) -> Decimal | None:
    """Value of a chain ``n op n op n ...`` with * / before + -; None if not evaluable."""
    terms = _TERM_RE.findall(expr)
    values = [_to_decimal(num) for _, num in terms]
    if any(v is None for v in values):
        return None
    sums: list[Decimal] = [values[0]]  # type: ignore[list-item]
    for (op, _), v in zip(terms[1:], values[1:]):
        if op in "*x×":
            sums[-1] *= v
        elif op in "/÷":
            if v == 0:
                return None
            sums[-1] /= v
        else:
            sums.append(v if op == "+" else -v)
    return sum(sums, Decimal(0))


def _equations_ok(line: str) -> bool:
    """True iff every equation ``expr = c`` in the line holds (vacuously true if none).

    ``c`` must equal the value rounded to c's own number of decimals (so "10/3 = 3.33"
    passes). An equation whose left side follows an operator or ")" (part of a longer,
    e.g. parenthesised, expression) is skipped.
    """
    for chain in _CHAIN_RE.finditer(line):  # non-overlapping: linear in the line length
        result = _RESULT_RE.match(line, chain.end())
        before = line[: chain.start()].rstrip()
        if result is None or len(_TERM_RE.findall(chain.group(0))) < 2:
            continue  # not "expr = c" with at least one operator
        if before and before[-1] in _BEFORE_EXPR:
            continue
        value, c = _evaluate(chain.group(0)), _to_decimal(result.group(1))
        if value is None or c is None:
            return False
        decimals = -c.as_tuple().exponent if c.as_tuple().exponent < 0 else 0  # type: ignore[operator]
        if abs(value - c) > Decimal(5) * Decimal(10) ** (-decimals - 1) + Decimal("1e-9"):
            return False
    return True


class GSM8KTask(Task):
    """GSM8K-style word problems from JSONL.

    If `heldout_path` is None, a seeded random `heldout_fraction` of the train file is held
    out. Prompts are deduplicated and the splits share no prompt. `Problem.answer` is the
    normalised number after ``####``; `Problem.solution` is the worked solution without
    ``<<...>>`` annotations, ending with ``#### <answer>``.

    Step rewards are a HEURISTIC (GSM8K has no step checker): every non-blank line of the
    completion is a step ending at its last character; a line containing ``####`` is right
    iff the number after it is the right answer; any other line is right iff every
    arithmetic equation ``a op b (op c ...) = d`` in it evaluates correctly (so a line
    with no equation counts as right).
    """

    alphabet = None

    def __init__(
        self,
        train_path: str,
        heldout_path: str | None = None,
        heldout_fraction: float = 0.1,
        seed: int = 0,
        prompt_template: str = "Question: {question}\nAnswer:",
    ) -> None:
        if not 0.0 <= heldout_fraction < 1.0:
            raise ValueError(f"heldout_fraction must be in [0, 1), got {heldout_fraction}")
        self.prompt_template = prompt_template
        train = self._load(train_path)
        if heldout_path is not None:
            heldout = self._load(heldout_path)
        else:
            train, heldout = split_off(train, heldout_fraction, seed)
        held_prompts = {p.prompt for p in heldout}
        self._train = [p for p in train if p.prompt not in held_prompts]
        self._heldout = heldout
        if not self._train:
            raise ValueError(f"task.train_path={train_path}: no training questions left (the file holds {len(train) + len(heldout)} "
                             "records, each a JSON object with 'question' and 'answer'); use a file with more of them")
        if not self._heldout:
            where = f"task.heldout_path={heldout_path} holds no record" if heldout_path is not None else (
                f"task.heldout_fraction={heldout_fraction} of the {len(train)} questions in task.train_path rounds to 0")
            raise ValueError(f"No held-out questions to evaluate on: {where}; give a larger file or fraction, or task.heldout_path=<test.jsonl>")

    def _load(self, path: str | Path) -> list[Problem]:
        """Problems of a JSONL file, deduplicated by prompt (first occurrence kept)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"GSM8K file not found: {path}; set task.train_path=/path/to/train.jsonl "
                f"(and optionally task.heldout_path=/path/to/test.jsonl)"
            )
        problems, seen = [], set()
        with path.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                problem = self._parse_record(line, f"{path}, line {lineno}")
                if problem.prompt not in seen:
                    seen.add(problem.prompt)
                    problems.append(problem)
        return problems

    def _parse_record(self, line: str, where: str) -> Problem:
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: invalid JSON ({e})") from None
        if not isinstance(record, dict):
            raise ValueError(f"{where}: expected a JSON object with 'question' and 'answer'")
        for key in ("question", "answer"):
            if not isinstance(record.get(key), str):
                raise ValueError(f"{where}: missing string field '{key}'")
        body, sep, final = record["answer"].rpartition("####")
        number = _NUMBER_RE.search(final.replace("$", ""))
        if not sep or number is None:
            raise ValueError(f"{where}: answer has no final '#### <number>' line")
        answer = normalize_number(number.group(0))
        solution = _ANNOTATION_RE.sub("", body).rstrip()
        solution = f"{solution}\n#### {answer}" if solution else f"#### {answer}"
        return Problem(self.prompt_template.format(question=record["question"].strip()), answer, solution)

    def train_problems(self) -> list[Problem]:
        return list(self._train)

    def heldout_problems(self) -> list[Problem]:
        return list(self._heldout)

    def sft_examples(self, n: int, seed: int) -> list[tuple[str, str]]:
        """`n` (prompt, " " + solution) pairs from the train split (without replacement if possible)."""
        return [(p.prompt, " " + p.solution) for p in draw(self._train, n, seed)]

    def extract_answer(self, completion: str) -> str | None:
        """Normalised number after the last ``####``; else the last number in the text; else None."""
        _, sep, final = completion.rpartition("####")
        if sep and (m := _NUMBER_RE.search(final.replace("$", ""))):
            return normalize_number(m.group(0))
        numbers = _NUMBER_RE.findall(completion)
        return normalize_number(numbers[-1]) if numbers else None

    def step_rewards(self, problem: Problem, completion: str) -> list[tuple[int, float]]:
        """(last-char index, 1.0/0.0) per non-blank line; see the class docstring (heuristic)."""
        rewards: list[tuple[int, float]] = []
        start = 0
        for line in completion.split("\n"):
            stripped = line.rstrip()
            if stripped.strip():
                if "####" in line:
                    m = _NUMBER_RE.search(line.rpartition("####")[2].replace("$", ""))
                    ok = m is not None and normalize_number(m.group(0)) == problem.answer
                else:
                    ok = _equations_ok(line)
                rewards.append((start + len(stripped) - 1, 1.0 if ok else 0.0))
            start += len(line) + 1
        return rewards
