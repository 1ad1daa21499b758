"""The Toolbox (the tools group's component): when a call closes, unknown tools, the call limit, timing, results
cut to max_result_tokens, a raising tool, bad settings. Fake format and tool: tests/tool_fakes.py."""

from __future__ import annotations

import time

import pytest

from grpo.models.tokenizer import build_char_tokenizer
from grpo.tools.toolbox import ELLIPSIS, Toolbox
from grpo_testkit import ARITHMETIC_ALPHABET
from tool_fakes import CountTool, EchoFormat


@pytest.fixture
def tok():
    return build_char_tokenizer(ARITHMETIC_ALPHABET)


def test_respond_only_when_a_call_closes_at_the_end(tok):
    box = Toolbox([CountTool()], EchoFormat("="), max_calls=2).bind(tok)
    assert box.respond("Q:12*3", 0) is None  # no close at the end
    assert box.respond("Q:1=2", 0) is None  # a close, but not at the end
    result = box.respond("Q:12*3=", 0)  # echo("12*3") -> "4", wrapped: "4;"
    assert (result.text, result.error) == ("4;", False)
    assert box.respond("Q:=", 0).error  # echo("") reports an error (CountTool's empty-arguments case)

    class NoCall(EchoFormat):
        def parse(self, text):
            return None

    assert Toolbox([CountTool()], NoCall("=")).bind(tok).respond("Q:12=", 0) is None  # ends with close, parse finds none


def test_the_call_past_max_calls_gets_no_result(tok):
    box = Toolbox([CountTool()], EchoFormat("="), max_calls=2).bind(tok)
    assert box.respond("Q:12=", 0) is not None and box.respond("Q:12=", 1) is not None
    assert box.respond("Q:12=", 2) is None  # the third call: no result, the policy's text goes on


def test_unknown_tool_gets_an_error_listing_the_tools(tok):
    box = Toolbox([CountTool()], EchoFormat("=", name="calc"), max_calls=2).bind(tok)
    result = box.respond("Q:12=", 0)
    assert result.error and "calc" in result.text and "echo" in result.text


def test_each_call_is_timed(tok):
    class Slow(CountTool):
        def __call__(self, arguments):
            time.sleep(0.05)
            return super().__call__(arguments)

    result = Toolbox([Slow()], EchoFormat("=")).bind(tok).respond("Q:12=", 0)
    assert 0.05 <= result.seconds < 5


def test_a_long_output_is_cut_to_max_result_tokens(tok):
    box = Toolbox([CountTool(repeat=20)], EchoFormat("="), max_result_tokens=6).bind(tok)
    result = box.respond("Q:12=", 0)  # "2" * 20 + ";" is 21 tokens; cut: some 2s, the ellipsis (1 unk token), ";"
    assert result.text.endswith(ELLIPSIS + ";") and result.text.startswith("2")
    assert len(box.result_ids(result)) == len(tok(result.text, add_special_tokens=False).input_ids) <= 6
    short = box.respond("Q:1234=", 0)  # "4" * 20 fits nowhere either; "4" repeat 20
    assert len(box.result_ids(short)) <= 6
    fits = Toolbox([CountTool(repeat=5)], EchoFormat("="), max_result_tokens=6).bind(tok).respond("Q:12=", 0)
    assert fits.text == "22222;"  # 6 tokens: left as it is


def test_a_raising_tool_gives_an_error_result(tok):
    class Broken(CountTool):
        def __call__(self, arguments):
            raise ZeroDivisionError("division by zero")

    result = Toolbox([Broken()], EchoFormat("=")).bind(tok).respond("Q:1/0=", 0)
    assert result.error and "ZeroDivisionError" in result.text


def test_bind_binds_a_format_that_asks(tok):
    class Bindable(EchoFormat):
        bound = None

        def bind(self, tokenizer):
            self.bound = tokenizer

    fmt = Bindable("=")
    assert Toolbox([CountTool()], fmt).bind(tok).tokenizer is tok and fmt.bound is tok


def test_closing_tokens_are_those_ending_with_the_close_text(tok):
    box = Toolbox([CountTool()], EchoFormat("="), max_calls=2).bind(tok)
    assert [tok.decode([i]) for i in box.closing_token_ids()] == ["="]


@pytest.mark.parametrize("kwargs, message", [
    (dict(tools=[]), "at least one tool"),
    (dict(tools=[CountTool(), CountTool()]), "share a name"),
    (dict(max_calls=0), "max_calls"),
    (dict(max_result_tokens=0), "max_result_tokens"),
    (dict(format=EchoFormat("")), "close"),
])
def test_bad_settings_are_named(kwargs, message):
    settings = dict(tools=[CountTool()], format=EchoFormat("=")) | kwargs
    with pytest.raises(ValueError, match=message):
        Toolbox(**settings)
