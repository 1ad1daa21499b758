"""Numbers as free text writes them: "1,000", "$5.50", "-3"."""

from __future__ import annotations

import re

NUM = r"\d+(?:,\d{3})*(?:\.\d+)?"  # digits with optional thousands commas and decimals (no sign)
NUMBER_RE = re.compile(rf"-?{NUM}")
MAX_NUM_CHARS = 40  # longer numbers are not evaluated (guards Decimal/float on garbage)


def normalize_number(text: str) -> str:
    """Canonical form of a number: strip, drop commas and a leading "$", drop trailing
    decimal zeros ("1,000" -> "1000", "5.50" -> "5.5", "3.0" -> "3"). Non-numbers are
    returned stripped, with commas removed."""
    s = text.strip().replace(",", "").lstrip("$")
    if not re.fullmatch(r"-?\d+(?:\.\d+)?", s) or len(s) > MAX_NUM_CHARS:
        return s
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    neg = s.startswith("-")
    s = s.lstrip("-")
    int_part, dot, frac = s.partition(".")
    s = (int_part.lstrip("0") or "0") + dot + frac
    return "-" + s if neg and s != "0" else s
