"""The built-in reward components (grpo.rewards.functions) on fixed strings, with the numbers worked by hand."""

import pytest

from grpo.models.tokenizer import build_char_tokenizer
from grpo.rewards.functions import BOXED_LAST, FormatMatch, HashAnswer, MathVerify, OverlongPenalty, overlong_penalty
from grpo.tasks.arithmetic import ArithmeticTask
from grpo.tasks.base import Problem
from grpo_testkit import compose_config
from hydra.utils import instantiate


def problem(answer: str) -> Problem:
    return Problem("Q", answer, "")


@pytest.mark.parametrize("answer, completion, want", [
    ("0.5", r"Half of it: \boxed{\frac{1}{2}}", 1.0),  # a LaTeX fraction equals the decimal
    ("3.0", r"so \boxed{3}", 1.0),  # plain numbers: 3 == 3.0
    ("3", r"so \boxed{4}", 0.0),  # a wrong value
    ("3", "I do not know", 0.0),  # no answer at all
    ("3", "", 0.0),
    ("1000", "the total is\n#### 1,000", 1.0),  # no box: the #### line
])
def test_math_verify(answer, completion, want):
    assert MathVerify()([problem(answer)], [completion]) == [want]


def test_hash_answer_compares_normalised_numbers():
    completions = ["3 apples each\n#### 1,000", "#### 5.50", "#### 7", "the answer is 1000", "#### 1000\n#### 999"]
    got = HashAnswer()([problem("1000"), problem("5.5"), problem("8"), problem("1000"), problem("1000")], completions)
    assert got == [1.0, 1.0, 0.0, 0.0, 0.0]  # wrong number; no #### line; the last #### counts


def test_format_default_is_reasoning_then_a_final_box():
    fmt = FormatMatch()
    completions = [
        r"2+2 is 4, so \boxed{4}",  # reasoning, then the box ends it
        "2+2 is 4, so \\boxed{4}.\n",  # a full stop after it: not the end  -> 0
        r"\boxed{4}",  # no reasoning before it
        r"\boxed{4} because 2+2 is 4",  # the box is not final
        "2+2 is 4",  # no box
        "x\n\\boxed{\\frac{1}{2}}  \n",  # trailing whitespace is fine, text may span lines
    ]
    assert fmt([problem("4")] * len(completions), completions) == [1.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    assert FormatMatch(r"^A:\d+$")([problem("1")] * 2, ["A:12", "A:x"]) == [1.0, 0.0]
    with pytest.raises(ValueError, match="not a regular expression"):
        FormatMatch("(unclosed")
    assert BOXED_LAST == compose_config(["reward=math"]).reward.components.format.fn.pattern  # the config's default is the code's


@pytest.mark.parametrize("length, want", [
    # L_max = 20, L_cache = 8: the buffer is tokens 13..20, penalty ((20 - 8) - |y|) / 8 inside it
    (0, 0.0), (12, 0.0),  # at or below L_max - L_cache = 12: no penalty
    (13, -0.125),  # (12 - 13) / 8
    (16, -0.5),  # (12 - 16) / 8
    (20, -1.0),  # (12 - 20) / 8 at L_max
    (21, -1.0), (40, -1.0),  # beyond L_max
])
def test_overlong_penalty_by_hand(length, want):
    assert overlong_penalty(length, max_length=20, buffer=8) == pytest.approx(want, abs=1e-12)


def test_overlong_penalty_counts_tokens_of_the_bound_tokenizer():
    # the char tokenizer: one token per character, so |y| = len(text)
    penalty = OverlongPenalty(max_new_tokens=20, buffer=8).bind(ArithmeticTask(train_size=50, heldout_size=5),
                                                               tokenizer=build_char_tokenizer(ArithmeticTask.alphabet))
    texts = ["1" * 12, "1" * 16, "1" * 20, ""]
    assert penalty([problem("1")] * 4, texts) == [0.0, -0.5, -1.0, 0.0]
    with pytest.raises(RuntimeError, match="not bound"):
        OverlongPenalty(max_new_tokens=20, buffer=8)([problem("1")], ["1"])
    with pytest.raises(ValueError, match="buffer=30"):
        OverlongPenalty(max_new_tokens=20, buffer=30)


def test_component_configs_instantiate():
    cfg = compose_config(["reward=gsm8k", "+reward/component@reward.components.overlong=overlong", "sampling.max_new_tokens=40"])
    reward = instantiate(cfg.reward)
    assert {n: c.weight for n, c in reward.components.items()} == {"correct": 1.0, "format": 0.1, "overlong": 1.0}
    assert isinstance(reward.components["correct"].fn, HashAnswer)
    assert reward.components["overlong"].fn.max_new_tokens == 40  # interpolated from sampling: written once
    fmt = reward.components["format"].fn
    assert fmt([problem("8")] * 3, ["so 3+5=8\n#### 8", "#### 8", "so 8"]) == [1.0, 0.0, 0.0]
