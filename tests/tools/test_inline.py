"""InlineFormat (GSM8K's ``<<EXPR=RESULT>>``): which texts end in a call, how results are written and found."""

from __future__ import annotations

import pytest

from grpo.tools.base import ToolCall
from grpo.tools.inline import InlineFormat


@pytest.fixture(scope="module")
def fmt() -> InlineFormat:
    return InlineFormat()


@pytest.mark.parametrize(
    "text, arguments",
    [
        ("<<812-457=", "812-457"),  # the whole completion so far is one open call
        ("500+312=812;<<812-457=", "812-457"),  # a hand step before the call
        ("<<2+3=5>>;<<5*4=", "5*4"),  # an answered call, then a new one
        ("x<<=", ""),  # an empty call: the calculator answers with an error
        ("<<<<2+3=", "2+3"),  # the last << opens the call
        ("<< 7 / 2 =", " 7 / 2 "),  # arguments exactly as written
    ],
)
def test_parse_finds_the_call_that_ends_the_text(fmt, text, arguments):
    assert fmt.parse(text) == ToolCall("calculator", arguments)


@pytest.mark.parametrize(
    "text",
    [
        "500+312=",  # a hand step: no open <<
        "<<2+3=5>>;7-1=",  # the << is closed by >>
        "<<2+3=5",  # the call's = came earlier (its result follows)
        "<<2+3=5=",  # ... still the earlier = closed it
        "<<2+3",  # not closed by = yet
        "",
        "=",
    ],
)
def test_parse_returns_none_without_a_closing_call(fmt, text):
    assert fmt.parse(text) is None


def test_close_and_result(fmt):
    assert fmt.close == "="
    assert fmt.result("355") == "355>>"
    # the engine's loop: the call closes, the result is appended, a finished step reads <<812-457=355>>
    text = "<<812-457="
    assert fmt.parse(text) is not None
    assert text + fmt.result("355") == "<<812-457=355>>"


def test_the_tool_name_is_a_setting():
    assert InlineFormat(tool="python").parse("<<1+1=") == ToolCall("python", "1+1")


@pytest.mark.parametrize(
    "text, spans",
    [
        # <<8-4=4>>;  indices: < 0, < 1, 8 2, - 3, 4 4, = 5, 4 6, > 7, > 8, ; 9  -> "4>>" is [6, 9)
        ("<<8-4=4>>;", [(6, 9)]),
        # 5+3=8;<<8-4=4>>;A:4 : the call's << at 6, its = at 11, the result "4>>" at [12, 15)
        ("5+3=8;<<8-4=4>>;A:4", [(12, 15)]),
        # two calls: <<1+1=2>> at [0, 9) with "2>>" at [6, 9); <<2*3=6>> starts at 10, "6>>" at [16, 19)
        ("<<1+1=2>>;<<2*3=6>>;A:6", [(6, 9), (16, 19)]),
        ("1+1=2;A:2", []),  # no call
        ("<<1+1=", []),  # a call not yet answered: nothing appended
        ("<<1+1", []),  # an unclosed call
        ("<<x>>;<<1+1=2>>", [(12, 15)]),  # <<x>> has no =: no call; the next one's result is [12, 15)
        ("<<1/0=error: division by zero>>;", [(6, 31)]),  # an error result is a result too
        ("<<1+1=2", [(6, 7)]),  # a result whose >> was cut off runs to the end
    ],
)
def test_result_spans(fmt, text, spans):
    assert fmt.result_spans(text) == spans


def test_result_spans_cover_exactly_what_result_appends(fmt):
    steps = ["<<812-457=", ";<<355+1=", ";A:356"]
    outputs = ["355", "356"]
    text, expected = "", []
    for step, output in zip(steps, outputs + [None]):
        text += step
        if output is not None:
            assert fmt.parse(text) is not None
            expected.append((len(text), len(text) + len(fmt.result(output))))
            text += fmt.result(output)
    assert text == "<<812-457=355>>;<<355+1=356>>;A:356"
    assert fmt.result_spans(text) == expected
    assert [text[a:b] for a, b in expected] == ["355>>", "356>>"]
