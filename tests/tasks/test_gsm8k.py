"""GSM8KTask: loading, normalisation, checkers and splits on a tiny fixture file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from grpo.tasks import GSM8KTask, Problem, normalize_number

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "gsm8k_tiny.jsonl"  # 12 problems


@pytest.fixture(scope="module")
def task() -> GSM8KTask:
    return GSM8KTask(str(FIXTURE), heldout_fraction=0.25, seed=0)


def by_answer(task: GSM8KTask, answer: str) -> Problem:
    return next(p for p in task.train_problems() + task.heldout_problems() if p.answer == answer)


def write_jsonl(path: Path, records: list[object]) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return str(path)


# ---- loading and normalisation ------------------------------------------------------------
def test_loads_fixture_and_splits(task: GSM8KTask) -> None:
    train, held = task.train_problems(), task.heldout_problems()
    assert len(train) == 9 and len(held) == 3  # round(12 * 0.25) = 3 held out
    assert not {p.prompt for p in train} & {p.prompt for p in held}
    again = GSM8KTask(str(FIXTURE), heldout_fraction=0.25, seed=0)
    assert again.train_problems() == train and again.heldout_problems() == held
    other = GSM8KTask(str(FIXTURE), heldout_fraction=0.25, seed=1)
    assert {p.prompt for p in other.train_problems() + other.heldout_problems()} == {
        p.prompt for p in train + held
    }


@pytest.mark.parametrize(
    "raw, expected",
    [("72", "72"), (" 72\n", "72"), ("1,000", "1000"), ("1,200", "1200"), ("5.50", "5.5"),
     ("3.0", "3"), ("0.50", "0.5"), ("-4", "-4"), ("$18", "18"), ("007", "7"), ("-0.0", "0")],
)
def test_normalize_number(raw: str, expected: str) -> None:
    assert normalize_number(raw) == expected


def test_problem_fields(task: GSM8KTask) -> None:
    tom = by_answer(task, "27")
    assert tom.prompt == (
        "Question: Tom has 15 apples. He buys 3 bags with 4 apples in each bag. "
        "How many apples does Tom have now?\nAnswer:"
    )
    # annotations <<3*4=12>> and <<15+12=27>> removed
    assert tom.solution == "Tom buys 3*4 = 12 apples.\nNow he has 15+12 = 27 apples.\n#### 27"
    assert by_answer(task, "1200").solution.endswith("4*300 = 1,200 pencils.\n#### 1200")  # "#### 1,200"
    assert by_answer(task, "7.5").solution.endswith("#### 7.5")  # "#### 7.50"
    for p in task.train_problems() + task.heldout_problems():
        assert "<<" not in p.solution and ">>" not in p.solution
        assert p.solution.endswith(f"#### {p.answer}")


# ---- verify / extract_answer --------------------------------------------------------------
def test_verify(task: GSM8KTask) -> None:
    tom = by_answer(task, "27")
    assert task.verify(tom, " " + tom.solution)
    assert task.verify(tom, "He has 27 apples.\n#### 27.0")
    assert task.verify(tom, "So Tom has 27 apples.")  # no ####: last number
    assert not task.verify(tom, "He has 27 apples.\n#### 28")  # the #### number wins
    assert not task.verify(tom, "garbage ### ??")
    assert not task.verify(tom, "")
    assert task.verify(by_answer(task, "1200"), "#### 1,200")


def test_extract_answer(task: GSM8KTask) -> None:
    assert task.extract_answer("#### 1,200") == "1200"
    assert task.extract_answer("#### $5.50 dollars") == "5.5"
    assert task.extract_answer("#### 3\nthen 99 more") == "3"  # after the last ####, not the last number
    assert task.extract_answer("#### 3\n#### 4") == "4"
    assert task.extract_answer("It is 5 or 27.") == "27"  # fallback: last number
    assert task.extract_answer("no numbers at all") is None


# ---- step_rewards (heuristic) -------------------------------------------------------------
def test_step_rewards_on_solution(task: GSM8KTask) -> None:
    tom = by_answer(task, "27")
    completion = " " + tom.solution
    # " Tom buys 3*4 = 12 apples." ends at 25; "Now he has 15+12 = 27 apples." at 55; "#### 27" at 63
    assert task.step_rewards(tom, completion) == [(25, 1.0), (55, 1.0), (63, 1.0)]
    for p in task.train_problems() + task.heldout_problems():
        assert all(r == 1.0 for _, r in task.step_rewards(p, " " + p.solution))


def test_step_rewards_wrong_steps(task: GSM8KTask) -> None:
    tom = by_answer(task, "27")
    # 3*4 = 13 is wrong (12); 13+15 = 28 is right; the final answer 28 is wrong (27)
    completion = "Tom buys 3*4 = 13 apples.\nNow he has 13+15 = 28 apples.\n#### 28"
    assert task.step_rewards(tom, completion) == [(24, 0.0), (54, 1.0), (62, 0.0)]
    # blank lines are not steps; a line without an equation counts as right;
    # 10/3 = 3.333.. rounds to 3.33, 2 + 3*4 = 14; the 30-char line starts at 12, ends at 41
    assert task.step_rewards(tom, "He thinks.\n\n10/3 = 3.33 and 2 + 3 * 4 = 14") == [(9, 1.0), (41, 1.0)]
    assert task.step_rewards(tom, "10/3 = 3.4") == [(9, 0.0)]  # 3.333.. does not round to 3.4
    assert task.step_rewards(tom, "7/0 = 1") == [(6, 0.0)]  # division by zero is wrong
    assert task.step_rewards(tom, "") == []
    assert task.step_rewards(tom, "\n \n") == []


# ---- splits with a separate held-out file, sft, errors ------------------------------------
def test_heldout_file_removes_shared_prompts(tmp_path: Path) -> None:
    lines = FIXTURE.read_text().splitlines()
    held = write_jsonl(tmp_path / "test.jsonl", lines[:2])
    t = GSM8KTask(str(FIXTURE), heldout_path=held)
    assert len(t.heldout_problems()) == 2 and len(t.train_problems()) == 10
    assert not {p.prompt for p in t.train_problems()} & {p.prompt for p in t.heldout_problems()}


def test_sft_examples(task: GSM8KTask) -> None:
    examples = task.sft_examples(5, seed=0)
    assert examples == task.sft_examples(5, seed=0)
    train = {p.prompt: p for p in task.train_problems()}
    for prompt, completion in examples:
        assert completion == " " + train[prompt].solution
    assert len(task.sft_examples(20, seed=0)) == 20  # more than the pool: sampled with replacement


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(FileNotFoundError) as err:
        GSM8KTask(str(missing))
    assert str(missing) in str(err.value) and "task.train_path=" in str(err.value)


@pytest.mark.parametrize(
    "bad_line, what",
    [
        ({"question": "How many?"}, "'answer'"),
        ({"answer": "#### 3"}, "'question'"),
        ({"question": "How many?", "answer": "It is 3."}, "####"),
        ("{not json", "invalid JSON"),
    ],
)
def test_malformed_line(tmp_path: Path, bad_line: object, what: str) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", [{"question": "Q1?", "answer": "1+1 = 2\n#### 2"}, bad_line])
    with pytest.raises(ValueError) as err:
        GSM8KTask(path)
    assert path in str(err.value) and "line 2" in str(err.value) and what in str(err.value)
