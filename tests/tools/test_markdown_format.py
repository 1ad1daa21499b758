"""The ToRA / DeepSeekMath code-block format: a call closes at the ``` that ends a ```python block; the result
is an ```output block; result_spans finds exactly the text `result` appended, and only after a call."""

from __future__ import annotations

import pytest

from grpo.tools.base import ToolCall
from grpo.tools.markdown import MarkdownFormat

FMT = MarkdownFormat()


def test_a_closed_python_block_is_a_call():
    text = "We compute it.\n```python\nx = 123 * 456\nprint(x)\n```"
    assert FMT.close == "```" and text.endswith(FMT.close)
    assert FMT.parse(text) == ToolCall("python", "x = 123 * 456\nprint(x)")
    assert FMT.parse("```python\n```") == ToolCall("python", "")  # empty: the tool says so


@pytest.mark.parametrize("text", [
    "We compute it.\n```",  # an opening fence (the language tag not written yet)
    "We compute it.\n```python\nprint(1)\n",  # not closed
    "```python\nprint('```",  # a fence inside a line closes nothing
    "```python\nprint(1)\n```\n```output\n1\n```",  # the end of an output block (the policy wrote one itself)
    "```text\nhello\n```",  # another language
    "no fence at all",
])
def test_what_is_not_a_call(text):
    assert FMT.parse(text) is None


def test_the_result_is_an_output_block():
    # the output's trailing newline is dropped (print adds one); a fence inside it is broken up
    assert FMT.result("56088\n") == "\n```output\n56088\n```\n"
    assert FMT.result("a\n```\nb") == "\n```output\na\n`` `\nb\n```\n"


def test_result_spans_are_the_results_after_calls():
    call = "Q: 123*456?\n```python\nprint(123 * 456)\n```"  # 12 + 10 + 17 + 3 = 42 characters
    result = FMT.result("56088")  # "\n```output\n" + "56088" + "\n```\n": 11 + 5 + 5 = 21 characters
    fake = "\n```output\n7\n```\n"  # an output block the policy wrote itself, after plain text: not a result
    text = call + result + "So 56088." + fake
    assert len(call) == 42 and len(result) == 21
    assert FMT.result_spans(text) == [(42, 63)] and text[42:63] == result
    two = call + result + "Again:\n```python\n1 + 1\n```" + FMT.result("2") + "Done."
    spans = FMT.result_spans(two)
    assert [two[s:e] for s, e in spans] == [result, "\n```output\n2\n```\n"]


def test_a_result_cut_off_at_the_end_runs_to_the_end():
    text = "```python\nprint(1)\n```\n```output\n1"  # the call is 10 + 9 + 3 = 22 characters
    assert FMT.result_spans(text) == [(22, len(text))]


def test_another_tool_name_and_a_bad_one():
    assert MarkdownFormat(tool="calculator").parse("```calculator\n2+2\n```") == ToolCall("calculator", "2+2")
    assert MarkdownFormat(tool="calculator").parse("```python\n2+2\n```") is None
    with pytest.raises(ValueError, match="the fence's language tag"):
        MarkdownFormat(tool="my tool")
