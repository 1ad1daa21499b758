"""GSM8K's calculator annotations as a call format (tools=calculator): ``<<812-457=355>>``.

The policy opens a call with ``<<``, writes the expression and closes the call with ``=``; the tool's output and
``>>`` are appended, so a finished step reads ``<<812-457=355>>`` (the policy wrote ``<<812-457=``, the tool
``355>>``). Text with no open ``<<`` never calls, so ``a+b=c`` steps written by hand end in ``=`` and go on.
"""

from __future__ import annotations

from grpo.tools.base import ToolCall


class InlineFormat:
    """``<<EXPR=`` calls the tool `tool` with EXPR; its result is written ``OUTPUT>>``."""

    open, close, end = "<<", "=", ">>"

    def __init__(self, tool: str = "calculator") -> None:
        self.tool = tool

    def parse(self, text: str) -> ToolCall | None:
        """The call ``<<EXPR=`` that ends `text`: the last ``<<`` not closed by ``>>``, whose first ``=`` is the
        last character of `text`. ``<<2+3=5>>;7-1=`` and ``<<2+3=5`` (an answered call's ``=``) call nothing."""
        start = text.rfind(self.open)
        if start < 0 or not text.endswith(self.close):
            return None
        body = text[start + len(self.open) : -len(self.close)]
        if self.end in body or self.close in body:
            return None
        return ToolCall(self.tool, body)

    def result(self, output: str) -> str:
        return output + self.end

    def result_spans(self, text: str) -> list[tuple[int, int]]:
        """[start, end) of each result: from after a call's closing ``=`` through the next ``>>`` (to the end of
        `text` when none follows). ``<<8-4=4>>;`` -> [(6, 9)], the span of ``4>>``."""
        spans: list[tuple[int, int]] = []
        start = text.find(self.open)
        while start >= 0:
            body = start + len(self.open)
            close, end = text.find(self.close, body), text.find(self.end, body)
            if close < 0:  # an unclosed call (a truncated completion): no result
                break
            if 0 <= end < close:  # ``<<...>>`` without ``=``: no call, nothing appended
                start = text.find(self.open, end + len(self.end))
                continue
            result_start = close + len(self.close)
            result_end = len(text) if end < 0 else end + len(self.end)
            if result_end > result_start:
                spans.append((result_start, result_end))
            start = text.find(self.open, result_end)
        return spans
