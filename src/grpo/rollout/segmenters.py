"""Step segmentation (the `steps` config group): a completion's text -> the index of each reasoning step's last
character, in order. One choice serves the whole process-supervision path in step_labels=mc mode: Monte-Carlo
labelling (which prefixes get continued), the PRM (where it scores) and process advantages (where step rewards
sit; `grpo.rollout.steps` turns the characters into tokens).

- `LineSteps`: each non-blank line (GSM8K's format: one step per line, a final ``#### <answer>``).
- `MarkerSteps`: a marker closes each step (``;`` in ``7*3=21;21+12=33;A:33``) or opens it
  (``Step 1: ... Step 2: ...``, with ``opens=True``).
- `RegexSteps`: each match of a regular expression is a step.
- `TurnSteps`: with tools, each policy turn is a step: it ends where a tool call closes (just before the
  tool's result), and the text after the last result is the final step.

A step ends at its last non-space character; blank steps are skipped. Segmenters are pure and never raise on
any text (a completion may be anything the policy wrote).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


def _last_non_space(text: str, start: int, stop: int) -> int | None:
    """Index of the last non-space character of text[start:stop], None if it is blank."""
    stripped = text[start:stop].rstrip()
    return start + len(stripped) - 1 if stripped.strip() else None


def _compiled(pattern: str, key: str) -> re.Pattern:
    if not isinstance(pattern, str) or not pattern:
        raise ValueError(f"{key}={pattern!r}: give a non-empty regular expression")
    try:
        compiled = re.compile(pattern)
    except re.error as err:
        raise ValueError(f"{key}={pattern!r} is not a valid regular expression ({err})") from None
    if compiled.fullmatch(""):
        raise ValueError(f"{key}={pattern!r} matches the empty string: a step boundary must be some text")
    return compiled


@dataclass(frozen=True)
class LineSteps:
    """Each non-blank line is a step ending at its last non-space character (a final line without a newline too)."""

    def __call__(self, text: str) -> list[int]:
        ends, start = [], 0
        for line in text.split("\n"):
            end = _last_non_space(text, start, start + len(line))
            if end is not None:
                ends.append(end)
            start += len(line) + 1
        return ends


@dataclass(frozen=True)
class MarkerSteps:
    """Steps delimited by a marker (a regular expression).

    opens=False: each match closes a step, which ends at the match's last character ("7*3=21;" ends at ';');
        a non-blank text after the last match is a final step (the answer "A:28").
    opens=True: each match opens a step ("Step 2:"), which runs to the next match; text before the first match
        is a step of its own if not blank.
    A step with nothing but spaces besides its marker is skipped.
    """

    marker: str = ";"
    opens: bool = False
    _re: re.Pattern = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "_re", _compiled(self.marker, "steps.marker"))

    def __call__(self, text: str) -> list[int]:
        matches = list(self._re.finditer(text))
        ends = []
        if self.opens:
            bounds = [0] + [m.start() for m in matches] + [len(text)]
            markers = {m.start(): m.end() for m in matches}
            for start, stop in zip(bounds, bounds[1:]):
                body = markers.get(start, start)  # the step's text after its marker
                if _last_non_space(text, body, stop) is not None:
                    ends.append(_last_non_space(text, start, stop))
            return ends
        start = 0
        for m in matches:
            if _last_non_space(text, start, m.start()) is not None:
                ends.append(m.end() - 1)
            start = m.end()
        tail = _last_non_space(text, start, len(text))
        return ends + ([tail] if tail is not None else [])


@dataclass(frozen=True)
class RegexSteps:
    """Each (non-overlapping) match of `pattern` is a step, ending at the match's last non-space character."""

    pattern: str = r"[^\n;]+"
    _re: re.Pattern = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "_re", _compiled(self.pattern, "steps.pattern"))

    def __call__(self, text: str) -> list[int]:
        ends = (_last_non_space(text, m.start(), m.end()) for m in self._re.finditer(text))
        return [e for e in ends if e is not None]


@dataclass(frozen=True)
class TurnSteps:
    """One step per policy turn of a transcript with tool results (the `tools` group's call format finds them:
    `format.result_spans`): a turn ends at the last non-space character before a result (where the call closes);
    the text after the last result, if not blank, is the final step. Without results the whole text is one step.
    e.g. "7*3=<<21>>;+12=<<33>>;A:33" with results "<<21>>", "<<33>>" -> steps end at the two '='s and the final '3'."""

    format: object = None

    def __post_init__(self):
        if self.format is None or not hasattr(self.format, "result_spans"):
            raise ValueError("steps=turns splits a transcript at its tool results: choose a toolbox too (tools=calculator "
                             "or tools=python), or another steps option (steps=line | marker | regex)")

    def __call__(self, text: str) -> list[int]:
        ends, start = [], 0
        for span_start, span_end in sorted(self.format.result_spans(text)):
            end = _last_non_space(text, start, span_start)
            if end is not None:
                ends.append(end)
            start = max(start, span_end)
        tail = _last_non_space(text, start, len(text))
        return ends + ([tail] if tail is not None else [])


def check_segmenter(segmenter, key: str = "step_labels.segmenter"):
    """`segmenter` if it maps a text to step ends; a clear error otherwise (e.g. a string where a component belongs)."""
    if not callable(segmenter):
        raise ValueError(
            f"{key}={segmenter!r} is not a step segmenter; choose one with the steps group: steps=line | steps=marker "
            "(steps.marker=';' or steps.marker='Step \\d+:' steps.opens=true) | steps=regex steps.pattern=<regex> | steps=turns (with tools)"
        )
    return segmenter
