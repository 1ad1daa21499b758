"""The `tools` group's component: the tools the policy may call, the format calls are written in, and the limits.

The rollout engine (grpo.rollout.tool_decode) asks `respond(text, calls_made)` whenever a row's latest token
could end `format.close`; a result's text is appended to that row as context (tokens outside the loss,
`result_ids`) and the row resumes. The limits:

- max_calls: calls per completion that get a result. A call past the limit gets none: `respond` returns
  None and the policy's text goes on as it wrote it (the call is not counted; the policy sees no answer, so
  it has to write one itself). This bounds a completion's width: at most
  max_new_tokens + max_calls * max_result_tokens tokens.
- max_result_tokens: a result's tokens at most. A longer output is cut (an ellipsis marks the cut) so that
  the result, the format's markers included, fits; the engine cuts any result's token ids to it as well.

An unknown tool name gets an error result listing the known tools; a tool that raises (which the contract
forbids) gets an error result with the exception, so a bug shows in rollout/tool/errors, not as a dead run.
"""

from __future__ import annotations

import time

from grpo.tools.base import CallFormat, Tool, ToolResult

ELLIPSIS = "…"  # marks an output cut to fit max_result_tokens


class Toolbox:
    """tools: the callable tools (each with its `name`); format: how calls and results are written."""

    def __init__(self, tools: list[Tool], format: CallFormat, max_calls: int = 4, max_result_tokens: int = 64):
        if not tools:
            raise ValueError("tools.tools is empty: give at least one tool (or choose tools=none)")
        names = [t.name for t in tools]
        if len(set(names)) != len(names):
            raise ValueError(f"tools.tools: two tools share a name ({names}); each needs its own")
        if not isinstance(max_calls, int) or max_calls < 1:
            raise ValueError(f"tools.max_calls={max_calls}: must be an integer >= 1 (e.g. 4)")
        if not isinstance(max_result_tokens, int) or max_result_tokens < 1:
            raise ValueError(f"tools.max_result_tokens={max_result_tokens}: must be an integer >= 1 (e.g. 64)")
        if not getattr(format, "close", ""):
            raise ValueError(f"tools.format ({type(format).__name__}) has no `close` text: the engine could never find a call")
        self.tools = {t.name: t for t in tools}
        self.format, self.max_calls, self.max_result_tokens = format, max_calls, max_result_tokens
        self.tokenizer, self._closing_ids = None, None

    def bind(self, tokenizer) -> "Toolbox":
        """Use `tokenizer` (the policy's) to measure and encode results; the format is bound too if it asks."""
        self.tokenizer, self._closing_ids = tokenizer, None
        if hasattr(self.format, "bind"):
            self.format.bind(tokenizer)
        return self

    def respond(self, text: str, calls_made: int) -> ToolResult | None:
        """The result of the call that closes at the end of `text` (the completion so far), or None when no call
        closes there or the row has made `max_calls` calls already."""
        if not text.endswith(self.format.close):
            return None
        call = self.format.parse(text)
        if call is None or calls_made >= self.max_calls:
            return None
        start = time.perf_counter()
        tool = self.tools.get(call.name)
        if tool is None:
            output, error = f"unknown tool {call.name!r}; tools: {', '.join(self.tools)}", True
        else:
            try:
                output, error = tool(call.arguments)
            except Exception as err:  # noqa: BLE001 - a tool must not raise; if it does, the policy gets the error
                output, error = f"{call.name} failed: {type(err).__name__}: {err}", True
        seconds = time.perf_counter() - start
        return ToolResult(text=self.format.result(self._fit(output)), error=bool(error), seconds=seconds)

    def result_ids(self, result: ToolResult) -> list[int]:
        """The token ids appended to the row: the result's text, at most `max_result_tokens` of them."""
        return self._encode(result.text)[: self.max_result_tokens]

    def closing_token_ids(self) -> list[int]:
        """Ids of the tokens that could end `format.close` (their text ends with its last character, or is part of
        a multi-byte character): only after one of these does the engine decode a row and ask `respond`. Worked out
        once per tokenizer (one decode of each vocabulary entry)."""
        if self._closing_ids is None:
            last = self.format.close[-1]
            texts = self._tokenizer().batch_decode([[i] for i in range(len(self.tokenizer))])
            self._closing_ids = [i for i, t in enumerate(texts) if t.endswith(last) or t.endswith("\ufffd")]
        return self._closing_ids

    def _fit(self, output: str) -> str:
        """`output`, cut (marked with ELLIPSIS) so that format.result(output) takes at most max_result_tokens tokens."""
        if self.tokenizer is None or len(self._encode(self.format.result(output))) <= self.max_result_tokens:
            return output
        ids = self._encode(output)
        keep = len(ids)
        while keep > 0:
            overflow = len(self._encode(self.format.result(self.tokenizer.decode(ids[:keep]) + ELLIPSIS))) - self.max_result_tokens
            if overflow <= 0:
                return self.tokenizer.decode(ids[:keep]) + ELLIPSIS
            keep -= overflow
        return ""  # even the markers alone are too long: result_ids cuts them

    def _encode(self, text: str) -> list[int]:
        return self._tokenizer()(text, add_special_tokens=False).input_ids

    def _tokenizer(self):
        if self.tokenizer is None:
            raise RuntimeError("Toolbox used before bind(tokenizer): the pipeline binds it to the policy's tokenizer")
        return self.tokenizer
