"""grpo.metrics: Pass@K, Maj@K and the majority vote (ties: first seen) on hand examples."""

from __future__ import annotations

import pytest
import torch

from grpo.metrics import maj_at_k, majority_answer, pass_at_k


def test_pass_at_k():
    correct = torch.tensor(
        [
            [False, False, False],  # none right
            [False, True, False],  # one right is enough
            [True, True, True],
        ]
    )
    out = pass_at_k(correct)
    assert out.dtype == torch.float32 and out.tolist() == [0.0, 1.0, 1.0]
    assert pass_at_k(torch.tensor([[1, 0], [0, 0]])).tolist() == [1.0, 0.0]  # ints work as booleans


@pytest.mark.parametrize(
    "answers, expected",
    [
        (["3", "5", "3"], "3"),  # plain majority
        (["5", "3", "3", "5"], "5"),  # tie 2-2: the one seen first
        (["3", "5", "5", "3"], "3"),
        (["7", "8", "9"], "7"),  # all different: the first
        ([None, None, "4"], "4"),  # None is not an answer, however frequent
        ([None, "2", None, "1", "1"], "1"),
        ([None, "2", "1", None], "2"),  # tie among answers, first non-None wins
        ([None, None], None),
        ([], None),
    ],
)
def test_majority_answer(answers, expected):
    assert majority_answer(answers) == expected


def test_maj_at_k():
    answers = [
        ["12", "12", "13"],  # majority right
        ["13", "12", "13"],  # majority wrong although one sample is right (pass@k would count it)
        ["12", "13", None],  # tie: first seen ("12") is right
        ["13", "12", None],  # tie: first seen ("13") is wrong
        [None, None, None],  # no answer at all
    ]
    out = maj_at_k(answers, ["12"] * 5)
    assert out.dtype == torch.float32
    assert out.tolist() == [1.0, 0.0, 1.0, 0.0, 0.0]
    assert maj_at_k([["a", "b"], ["b", "b"]], ["a", "a"]).tolist() == [1.0, 0.0]
