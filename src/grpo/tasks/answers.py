"""Final answers in free text: where a solution states its answer, and whether two answers agree.

- `last_boxed("... \\boxed{\\frac{1}{2}}")` -> "\\frac{1}{2}" (braces balanced; the last box wins);
- `after_hashes("...\\n#### 1,000")` -> "1000" (GSM8K's final line, normalised);
- `final_answer(text)`: the boxed answer, else the `####` one, else the last number, else None;
- `equivalent(gold, completion)`: math-verify's equivalence of the gold answer and the completion's
  answer (LaTeX, \\boxed{}, fractions, decimals, plain numbers), never raising.

Tasks use these for held-out accuracy and maj@k; the built-in reward functions use them for correctness.
"""

from __future__ import annotations

import logging
import re

from grpo.tasks.numbers import NUMBER_RE, normalize_number

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
_MAX_ANSWER_CHARS = 2000  # a longer "answer" is not an answer (guards the parser on garbage)


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (or `\\fbox{...}`) with balanced braces; None if there is none."""
    starts = [m.end() for m in _BOX_RE.finditer(text)]
    for start in reversed(starts):
        depth = 1
        for i in range(start, len(text)):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                return text[start:i].strip()
    return None


def after_hashes(text: str) -> str | None:
    """The normalised number after the last `####`, None if there is none."""
    _, sep, final = text.rpartition("####")
    m = NUMBER_RE.search(final.replace("$", "")) if sep else None
    return normalize_number(m.group(0)) if m else None


def final_answer(text: str) -> str | None:
    """The answer a solution states: boxed, else after `####`, else its last number; None if none."""
    boxed = last_boxed(text)
    if boxed is not None:
        return normalize_number(boxed)
    hashed = after_hashes(text)
    if hashed is not None:
        return hashed
    numbers = NUMBER_RE.findall(text)
    return normalize_number(numbers[-1]) if numbers else None


def _quiet_math_verify():
    from math_verify import parse, verify

    logging.getLogger("math_verify").setLevel(logging.CRITICAL)  # it logs every unparsable string
    return parse, verify


def equivalent(gold: str, completion: str) -> bool:
    """True iff the completion's final answer equals `gold` mathematically (math-verify), e.g. gold "0.5"
    and "... \\boxed{\\frac{1}{2}}", gold "3.0" and "\\boxed{3}". False when the completion states no answer."""
    parse, verify = _quiet_math_verify()
    gold = gold.strip()
    if not gold or len(gold) > _MAX_ANSWER_CHARS:
        return False
    try:
        gold_parsed = parse(f"${gold}$") or parse(gold)
        boxed = last_boxed(completion)
        target = f"\\boxed{{{boxed}}}" if boxed is not None else (after_hashes(completion) or completion[-_MAX_ANSWER_CHARS:])
        answer = parse(target)
        return bool(gold_parsed and answer and verify(gold_parsed, answer))
    except Exception:  # math-verify on adversarial text: a non-answer, never a crash
        return False
