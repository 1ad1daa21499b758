"""Tools the policy can call in the middle of a completion (the `tools` config group).

The contract every part of tool use is written against (engine, tools, formats, warm start, logs):

- A `Tool` has a `name` and maps the text of a call's arguments to a result text. It never raises for
  bad input from the policy: a failure is a short error text returned to the policy (and flagged).
- A `CallFormat` says how a call and its result are written in the completion: it finds a call that
  closes exactly at the end of the text generated so far, wraps a result in the format's markers,
  and finds the result spans in a finished transcript (so that the warm start and the logs can tell
  the tool's text from the policy's).
- A `Toolbox` (the `tools` group's component) holds the tools, one format and `max_calls`; the rollout
  engine asks it, whenever a row's text ends with `format.close`, whether a call closed, and if so
  appends `ToolResult.text` to that row as context (tokens outside the loss) and resumes the row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class ToolCall:
    name: str  # the tool asked for
    arguments: str  # the call's argument text as the policy wrote it (an expression, code, JSON arguments)


@dataclass(frozen=True)
class ToolResult:
    text: str  # what is appended to the completion after the call (the format's markers included)
    error: bool  # the tool failed (bad expression, exception, timeout, limit, unknown tool, too many calls)
    seconds: float  # wall-clock time spent in the tool


class Tool(Protocol):
    name: str

    def __call__(self, arguments: str) -> tuple[str, bool]:
        """(output text, error): failures are returned as a short error text with error=True, never raised."""


class CallFormat(Protocol):
    close: str  # every call ends with this text: the engine asks `parse` only when a row's text ends with it

    def parse(self, text: str) -> ToolCall | None:
        """The call that closes exactly at the end of `text` (the completion so far), or None."""

    def result(self, output: str) -> str:
        """The text appended after a call: the tool's output inside the format's result markers."""

    def result_spans(self, text: str) -> list[tuple[int, int]]:
        """[start, end) character spans of the tool results in a finished transcript `text`."""
