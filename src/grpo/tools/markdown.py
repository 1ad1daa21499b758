"""The tool-integrated format of ToRA (Gou et al., 2023) and DeepSeekMath (Sec. 4's tool-integrated reasoning), for
plain prompts: the policy writes a fenced code block and the tool's output follows it in an ```output block.

    ...so we compute it.
    ```python
    print(123 * 456)
    ```                      <- the call closes here (close = "```" ending the block)
    ```output                <- the result: "\\n```output\\n<output>\\n```\\n"
    56088
    ```
    The product is 56088.

A fence inside the tool's output is broken up (```` ``` ```` becomes ```` `` ` ````) so that the result's end is
unambiguous; a call's code cannot itself contain a line that is only ```` ``` ````.
"""

from __future__ import annotations

from grpo.tools.base import ToolCall

FENCE = "```"
RESULT_OPEN = "\n```output\n"
RESULT_CLOSE = "\n```\n"


class MarkdownFormat:
    """MarkdownFormat(tool="python"): a ```<tool> block is a call to that tool; its result an ```output block."""

    close = FENCE

    def __init__(self, tool: str = "python"):
        if not tool or any(c.isspace() or c == "`" for c in tool):
            raise ValueError(f"tools.format.tool={tool!r}: the fence's language tag, one word (e.g. python)")
        self.tool = tool

    def parse(self, text: str) -> ToolCall | None:
        """The ```<tool> block whose closing fence ends `text` (the fence on a line of its own), or None."""
        if not text.endswith(FENCE):
            return None
        body = text[: -len(FENCE)]
        if body and not body.endswith("\n"):  # a fence in the middle of a line closes nothing
            return None
        start = body.rfind(FENCE)
        if start < 0:
            return None
        header, newline, code = body[start + len(FENCE):].partition("\n")
        if not newline or header.strip() != self.tool:  # an ```output block, an opening fence, another language
            return None
        return ToolCall(self.tool, code.removesuffix("\n"))

    def result(self, output: str) -> str:
        return RESULT_OPEN + output.rstrip("\n").replace(FENCE, "`` `") + RESULT_CLOSE

    def result_spans(self, text: str) -> list[tuple[int, int]]:
        """[start, end) of each ```output block that follows a call's closing fence (one the policy wrote elsewhere
        is its own text); a result cut off by the end of the transcript runs to the end."""
        spans, at = [], 0
        while (start := text.find(RESULT_OPEN, at)) >= 0:
            end = text.find(RESULT_CLOSE, start + len(RESULT_OPEN))
            end = len(text) if end < 0 else end + len(RESULT_CLOSE)
            if self.parse(text[:start]) is not None:
                spans.append((start, end))
                at = end
            else:
                at = start + 1
        return spans
