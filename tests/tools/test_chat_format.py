"""The chat template's tool format (Qwen2.5 / Hermes): <tool_call> JSON calls, the result as the template renders a
tool message (found by bind), result_spans; with the offline demo parts' tokenizer (a Qwen2.5-style template)."""

from __future__ import annotations

import json

import pytest

from grpo.models.demo_parts import build_tokenizer
from grpo.models.tokenizer import build_char_tokenizer
from grpo.tools.base import ToolCall
from grpo.tools.chat import ChatFormat, call_arguments
from grpo.tools.python import Python

# The demo template's tool turn after an assistant turn: the assistant's end of turn, a user turn holding the
# output in <tool_response> tags, and the next assistant turn's generation prompt.
BEFORE = "<|im_end|>\n<|im_start|>user\n<tool_response>\n"
AFTER = "\n</tool_response><|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(["What is 2+3?", "2+3=5", "The answer is \\boxed{5}."], vocab_size=300)


@pytest.fixture(scope="module")
def fmt(tokenizer):
    return ChatFormat().bind(tokenizer)


def test_bind_finds_the_templates_tool_turn(fmt, tokenizer):
    assert (fmt.before, fmt.after) == (BEFORE, AFTER)
    assert fmt.result("5") == BEFORE + "5" + AFTER
    # the same text as the template renders for the whole conversation
    call = '<tool_call>\n{"name": "python", "arguments": {"code": "2+3"}}\n</tool_call>'
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Q"}], tokenize=False, add_generation_prompt=True)
    whole = tokenizer.apply_chat_template([{"role": "user", "content": "Q"}, {"role": "assistant", "content": call},
                                           {"role": "tool", "content": "5"}], tokenize=False, add_generation_prompt=True)
    assert prompt + call + fmt.result("5") == whole


def test_a_closed_tool_call_is_a_call(fmt):
    text = 'Let me compute.\n<tool_call>\n{"name": "python", "arguments": {"code": "print(2 ** 10)"}}\n</tool_call>'
    assert fmt.close == "</tool_call>" and fmt.parse(text) == ToolCall("python", "print(2 ** 10)")


@pytest.mark.parametrize("arguments, expected", [
    ({"code": "1+1"}, "1+1"),  # one string argument: itself
    ('{"expression": "3*4"}', "3*4"),  # arguments written as a JSON string: decoded first
    ({"a": 1, "b": "x"}, '{"a": 1, "b": "x"}'),  # several: their JSON
    ("print(1)", "print(1)"),  # a bare string
])
def test_call_arguments(arguments, expected):
    assert call_arguments(arguments) == expected


@pytest.mark.parametrize("text", [
    "no call </tool_call>",  # a close with no open
    '<tool_call>{"name": "python", "arguments": {}}</tool_call> and </tool_call>',  # already closed
    '<tool_call>{"name": "python"}',  # not closed
])
def test_what_is_not_a_call(fmt, text):
    assert fmt.parse(text) is None


@pytest.mark.parametrize("inner", ['{"name": "python", "arguments": {"code": "1+"', '["python"]', '{"arguments": {}}'])
def test_a_malformed_call_names_no_tool(fmt, inner):
    assert fmt.parse(f"<tool_call>\n{inner}\n</tool_call>") == ToolCall("", inner)


def test_result_spans(fmt):
    call = '<tool_call>{"name": "python", "arguments": {"code": "2+3"}}</tool_call>'
    text = "Think." + call + fmt.result("5") + "So 5." + BEFORE + "not after a call" + AFTER
    start = len("Think." + call)
    assert fmt.result_spans(text) == [(start, start + len(BEFORE) + 1 + len(AFTER))]
    assert fmt.result_spans(call + BEFORE + "cut") == [(len(call), len(call + BEFORE + "cut"))]


def test_a_template_without_a_tool_role_is_a_clear_error():
    plain = build_tokenizer(["2+3=5"], vocab_size=300)
    plain.chat_template = "{% for m in messages %}{{ m['role'] + ': ' + m['content'] }}{% endfor %}"
    with pytest.raises(ValueError, match="needs a chat template with a tool role.*has no tool role.*MarkdownFormat"):
        ChatFormat().bind(plain)
    with pytest.raises(ValueError, match="has none"):
        ChatFormat().bind(build_char_tokenizer("0123456789"))
    with pytest.raises(RuntimeError, match="before bind"):
        ChatFormat().result("5")


def test_the_python_tool_answers_a_chat_call(fmt):
    call = fmt.parse('<tool_call>\n{"name": "python", "arguments": {"code": "x = 2 ** 10\\nx"}}\n</tool_call>')
    tool = Python(timeout_s=5)
    assert call.name == tool.name and tool(call.arguments) == ("1024\n", False)
    schema = tool.schema  # what the chat template lists: an OpenAI function dict
    assert schema["type"] == "function" and schema["function"]["name"] == "python"
    assert schema["function"]["parameters"]["required"] == ["code"] and json.dumps(schema)
