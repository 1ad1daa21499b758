"""A call format and a tool written in the tiny char tokenizer's alphabet (digits + - * = ; : Q A), standing in
for the real ones (grpo.tools.*) in the engine's tests (importable as `tool_fakes`; Hydra `_target_`s too).

EchoFormat: a call is the text after the last ';' (or ':'), closed by `close` (default "="); its result is the
    tool's output followed by ";". e.g. "Q:1+2=A12*3=" closes the call echo("12*3"), whose result is "4;".
CountTool ("echo"): the output is the number of characters of the arguments, repeated `repeat` times;
    error=True when the arguments are empty. e.g. "12*3" -> "4" (repeat 1), "44" (repeat 2).
"""

from __future__ import annotations

from grpo.tools.base import ToolCall


class EchoFormat:
    def __init__(self, close: str = "=", name: str = "echo"):
        self.close, self.name = close, name

    def parse(self, text: str) -> ToolCall | None:
        if not text.endswith(self.close):
            return None
        body = text[: len(text) - len(self.close)]
        start = max(body.rfind(";"), body.rfind(":")) + 1
        return ToolCall(self.name, body[start:])

    def result(self, output: str) -> str:
        return output + ";"

    def result_spans(self, text: str) -> list[tuple[int, int]]:
        return []  # the engine's tests read Completions.tool_mask


class CountTool:
    name = "echo"

    def __init__(self, repeat: int = 1):
        self.repeat = repeat

    def __call__(self, arguments: str) -> tuple[str, bool]:
        if not arguments:
            return "0", True
        return str(len(arguments)) * self.repeat, False


class RankCountTool(CountTool):
    """CountTool whose output is 1 + 2 x (the process's rank) times longer: ranks of a 2-process run get results
    (and so completions) of different lengths."""

    def __call__(self, arguments: str) -> tuple[str, bool]:
        import torch.distributed as dist

        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        self.repeat = 1 + 2 * rank
        return super().__call__(arguments)
