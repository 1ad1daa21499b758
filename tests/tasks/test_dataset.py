"""task=dataset: rows read through `datasets` from each kind of source, splits, column mapping, conversations,
metadata, answers judged by math-verify, and the errors a user meets."""

from __future__ import annotations

import json

import datasets
import pytest

from grpo.tasks.dataset import DatasetTask

ROWS = [{"problem": f"What is {i} + {i}?", "solution": f"Twice {i} is \\boxed{{{2 * i}}}.", "level": i % 3} for i in range(20)]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def math_task_kwargs():
    return dict(question_column="problem", answer_column="solution")


@pytest.mark.parametrize("kind", ["jsonl", "parquet", "csv", "save_to_disk"])
def test_every_local_source_gives_the_same_problems(tmp_path, kind, math_task_kwargs):
    data = datasets.Dataset.from_list(ROWS)
    path = tmp_path / f"rows.{kind}"
    if kind == "jsonl":
        write_jsonl(path, ROWS)
    elif kind == "parquet":
        data.to_parquet(str(path))
    elif kind == "csv":
        data.to_csv(str(path), index=False)
    else:
        data.save_to_disk(str(path))
    task = DatasetTask(str(path), heldout_fraction=0.25, seed=3, **math_task_kwargs)
    train, heldout = task.train_problems(), task.heldout_problems()
    assert (len(train), len(heldout)) == (15, 5)
    assert not {p.prompt for p in train} & {p.prompt for p in heldout}
    by_prompt = {p.prompt: p for p in train + heldout}
    p = by_prompt["What is 7 + 7?"]
    assert p.answer == "14"  # the boxed final answer of the solution column
    assert p.solution == "Twice 7 is \\boxed{14}."  # the worked solution, for the warm start
    assert int(p.metadata["level"]) == 1 and "problem" not in p.metadata  # other columns reach the rewards


def test_the_heldout_fraction_is_seeded(tmp_path, math_task_kwargs):
    path = write_jsonl(tmp_path / "rows.jsonl", ROWS)
    held = lambda seed: [p.prompt for p in DatasetTask(str(path), seed=seed, heldout_fraction=0.25, **math_task_kwargs).heldout_problems()]
    assert held(0) == held(0)
    assert held(0) != held(1)


def test_named_splits_of_a_save_to_disk_folder(tmp_path, math_task_kwargs):
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS[:16]), "test": datasets.Dataset.from_list(ROWS[16:])}).save_to_disk(
        str(tmp_path / "dd"))
    task = DatasetTask(str(tmp_path / "dd"), heldout_split="test", **math_task_kwargs)
    assert [p.answer for p in task.heldout_problems()] == ["32", "34", "36", "38"]
    assert len(task.train_problems()) == 16


def test_a_heldout_file_and_gsm8k_style_answers(tmp_path):
    gsm = [{"question": f"Tom has {i} apples and buys 1,000 more. How many?", "answer": f"{i} + 1000 = {i + 1000}\n#### {i + 1000:,}"}
           for i in range(6)]
    train = write_jsonl(tmp_path / "train.jsonl", gsm[:4])
    test = write_jsonl(tmp_path / "test.jsonl", gsm[4:])
    task = DatasetTask(str(train), heldout_path=str(test))
    assert [p.answer for p in task.heldout_problems()] == ["1004", "1005"]  # after ####, commas dropped
    assert task.verify(task.heldout_problems()[0], "So 1004 in all.\n#### 1,004")
    assert not task.verify(task.heldout_problems()[0], "#### 1003")


def test_bare_answers_are_judged_by_math_verify(tmp_path):
    rows = [{"question": "Half of one?", "answer": "\\frac{1}{2}"}, {"question": "Three?", "answer": "3.0"},
            {"question": "Two?", "answer": "2"}, {"question": "Four?", "answer": "4"}]
    task = DatasetTask(str(write_jsonl(tmp_path / "r.jsonl", rows)), heldout_path=str(write_jsonl(tmp_path / "h.jsonl", rows[:2])))
    half, three = task.heldout_problems()
    assert task.verify(half, "It is \\boxed{0.5}") and task.verify(half, "\\boxed{\\frac{2}{4}}")
    assert task.verify(three, "\\boxed{3}") and not task.verify(three, "\\boxed{4}")
    assert not task.verify(three, "I do not know")  # no answer at all
    assert task.extract_answer("... \\boxed{3}") == "3" and task.extract_answer("no number") is None
    prompt, target = task.sft_examples(1, 0)[0]  # a bare answer: the warm start's target states it boxed
    assert target == f"The answer is $\\boxed{{{ {p.prompt: p.answer for p in task.train_problems()}[prompt] }}}$."


def test_conversational_rows(tmp_path):
    rows = [{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"What is {i} squared?"}],
             "answer": str(i * i), "source": "squares"} for i in range(10)]
    task = DatasetTask(str(write_jsonl(tmp_path / "c.jsonl", rows)), question_column="messages", heldout_fraction=0.2)
    p = task.train_problems()[0]
    assert p.messages[0] == {"role": "system", "content": "Be brief."}
    assert p.prompt == p.messages[-1]["content"]  # the last user turn: what a plain template shows
    assert p.metadata == {"source": "squares"}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(question_column="question"), "no column 'question' (task.question_column); the columns are problem, solution, level"),
        (dict(question_column="problem", answer_column="solution", heldout_split="val"), "single split, not a split named 'val'"),
        (dict(question_column="problem", answer_column="solution", heldout_fraction=1.5), "task.heldout_fraction=1.5"),
        (dict(question_column="problem", answer_column="solution", heldout_fraction=0.01), "no held-out questions"),
        (dict(question_column="level", answer_column="solution"), "column 'level' holds int"),
    ],
)
def test_bad_settings_say_what_to_change(tmp_path, kwargs, message):
    path = write_jsonl(tmp_path / "rows.jsonl", ROWS)
    with pytest.raises(ValueError) as err:
        DatasetTask(str(path), **kwargs)
    assert message in str(err.value)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="task.path=.*missing.parquet: no such file"):
        DatasetTask(str(tmp_path / "missing.parquet"))


def test_an_empty_answer_is_named_with_its_row(tmp_path):
    path = write_jsonl(tmp_path / "rows.jsonl", [{"question": "a?", "answer": "1"}, {"question": "b?", "answer": ""}])
    with pytest.raises(ValueError, match="row 1: empty answer in column 'answer'"):
        DatasetTask(str(path))
