"""steps=turns (grpo.rollout.segmenters.TurnSteps): one step per policy turn of a transcript with tool results."""

from __future__ import annotations

import re

import pytest

from grpo.rollout.segmenters import TurnSteps


class Marked:
    """Results written ⟦...⟧ (a stand-in for the tools group's formats)."""

    def result_spans(self, text):
        return [m.span() for m in re.finditer(r"⟦[^⟧]*⟧", text)]


def test_a_turn_ends_where_its_call_closes_and_the_answer_is_the_last_step():
    text = "7*3=⟦21⟧;21+12=⟦33⟧;A:33"
    # turns: "7*3=" ends at index 3; ";21+12=" ends at index 14 (8 + 7 - 1); ";A:33" ends at the last index, 23
    assert TurnSteps(Marked())(text) == [3, 14, 23]
    assert [text[i] for i in TurnSteps(Marked())(text)] == ["=", "=", "3"]


def test_blank_turns_are_skipped_and_no_result_is_one_step():
    assert TurnSteps(Marked())("A:5 ") == [2]  # no tool result: the whole text, to its last non-space character
    assert TurnSteps(Marked())("⟦1⟧⟦2⟧  ") == []  # nothing but results and spaces
    assert TurnSteps(Marked())("1=⟦1⟧") == [1]  # the call, then nothing after its result


def test_turns_need_a_call_format():
    with pytest.raises(ValueError, match="tools=calculator"):
        TurnSteps(None)
