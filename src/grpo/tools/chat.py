"""The chat template's own tool format (Qwen2.5 / Hermes), for prompt=chat: an instruct model's trained habit.

A call is what those templates teach in the system turn,

    <tool_call>
    {"name": "python", "arguments": {"code": "print(2**10)"}}
    </tool_call>                  <- close

and the result is whatever the tokenizer's chat template renders for a `{"role": "tool", "content": output}`
message between two assistant turns: `bind(tokenizer)` finds it by rendering a conversation with and without a tool
message and taking the difference. For Qwen2.5 it is

    <|im_end|>\\n<|im_start|>user\\n<tool_response>\\n{output}\\n</tool_response><|im_end|>\\n<|im_start|>assistant\\n

(the assistant's end of turn, the tool turn, and the generation prompt of the next assistant turn).

The tool gets the call's arguments as text: the one string argument itself (`code`, `expression`) when there is
exactly one; otherwise their JSON. A call that is not JSON of that shape is ToolCall(name="", arguments=<what the
policy wrote>), which no tool answers (the toolbox's error for an unknown tool).
"""

from __future__ import annotations

import json

from grpo.tools.base import ToolCall

OPEN, CLOSE = "<tool_call>", "</tool_call>"
CALL_MARK, OUTPUT_MARK = "GRPO-CALL-5e1f", "GRPO-OUTPUT-9c2d"  # placeholders found again in the rendered text


def call_arguments(arguments) -> str:
    """The text a tool gets: a single string argument as is, a JSON-string argument object decoded first, else JSON."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return arguments
    if isinstance(arguments, dict) and len(arguments) == 1 and isinstance(next(iter(arguments.values())), str):
        return next(iter(arguments.values()))
    return json.dumps(arguments, ensure_ascii=False)


def tool_turn(tokenizer) -> tuple[str, str]:
    """(text before, text after) the output of a tool message, as the tokenizer's chat template renders it right
    after an assistant turn (that turn's end included) and before the next assistant turn's generation prompt."""
    name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
    template = getattr(tokenizer, "chat_template", None) or ""
    if "tool" not in template or OPEN not in template:
        raise ValueError(
            f"tools.format=chat needs a chat template with a tool role and {OPEN} calls (Qwen2.5 / Hermes style), and "
            f"{name!r}'s {'has none' if not template else 'has no ' + ('tool role' if 'tool' not in template else OPEN)}. "
            "Use the plain-prompt format instead (tools.format._target_=grpo.tools.markdown.MarkdownFormat, with "
            "prompt=plain), or a tokenizer whose template has one (e.g. Qwen/Qwen2.5-*-Instruct)."
        )
    conversation = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": CALL_MARK}]
    try:
        turn = tokenizer.apply_chat_template(conversation, tokenize=False)
        resumed = tokenizer.apply_chat_template(conversation + [{"role": "tool", "content": OUTPUT_MARK}],
                                                tokenize=False, add_generation_prompt=True)
    except Exception as err:  # noqa: BLE001 -- a template's own error (e.g. raise_exception) said as ours
        raise ValueError(f"tools.format=chat: {name!r}'s chat template cannot render a tool message: {err}") from None
    if not resumed.startswith(turn) or resumed.count(OUTPUT_MARK) != 1 or turn.count(CALL_MARK) != 1:
        raise ValueError(f"tools.format=chat: {name!r}'s chat template does not render a tool message after an "
                         "assistant turn as a turn of its own (the rendered text with it does not extend the one without)")
    end_of_turn = turn[turn.index(CALL_MARK) + len(CALL_MARK):]
    before, _, after = resumed[len(turn):].partition(OUTPUT_MARK)
    return end_of_turn + before, after


class ChatFormat:
    """<tool_call>{"name": ..., "arguments": {...}}</tool_call>; the result is the template's tool turn (bind first)."""

    close = CLOSE

    def __init__(self):
        self.before: str | None = None
        self.after: str | None = None

    def bind(self, tokenizer) -> "ChatFormat":
        self.before, self.after = tool_turn(tokenizer)
        return self

    def parse(self, text: str) -> ToolCall | None:
        if not text.endswith(CLOSE):
            return None
        start = text.rfind(OPEN)
        if start < 0:
            return None
        inner = text[start + len(OPEN): -len(CLOSE)]
        if CLOSE in inner:  # the last call is already closed: this close is the policy's own text
            return None
        try:
            call = json.loads(inner)
        except json.JSONDecodeError:
            return ToolCall("", inner.strip())
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            return ToolCall("", inner.strip())
        return ToolCall(call["name"], call_arguments(call.get("arguments", call.get("parameters", {}))))

    def result(self, output: str) -> str:
        if self.before is None:
            raise RuntimeError("ChatFormat.result before bind(tokenizer): the tool turn comes from the chat template")
        return self.before + output + self.after

    def result_spans(self, text: str) -> list[tuple[int, int]]:
        """[start, end) of each tool turn that follows a call's close; one cut off by the end of the text runs to it."""
        if self.before is None:
            raise RuntimeError("ChatFormat.result_spans before bind(tokenizer)")
        spans, at = [], 0
        while (start := text.find(self.before, at)) >= 0:
            if not text[:start].endswith(CLOSE):
                at = start + 1
                continue
            end = text.find(self.after, start + len(self.before))
            end = len(text) if end < 0 else end + len(self.after)
            spans.append((start, end))
            at = end
        return spans
