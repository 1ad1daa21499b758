"""Questions with final answers from any dataset the `datasets` library reads (task=dataset).

`path` is a local JSON / JSONL / CSV / parquet file, a folder written by `save_to_disk`, a folder of
data files, or a hub id (online). The held-out split is a named split (`heldout_split`), a separate
file (`heldout_path`), or a seeded fraction of the train split (`heldout_fraction`).

Columns: `question_column` holds the question, as text or as a conversation (a list of
{"role", "content"} messages); `answer_column` the answer: a bare answer ("72", "\\frac{1}{2}"), a
worked solution ending in `\\boxed{...}` (MATH) or in `#### <number>` (GSM8K); the final answer is
taken from it. `solution_column` (optional) holds a worked solution for the warm start (default: the
answer column when it is one). Every other column reaches reward functions as `Problem.metadata`.

Held-out accuracy, pass@k and maj@k judge the final answer by math-verify (grpo.tasks.answers).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .answers import after_hashes, equivalent, final_answer, last_boxed
from .base import Problem, Task, draw, split_off

BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet", ".arrow": "arrow"}


def _load(path: str, *, name: str | None, where: str):
    """A Dataset or DatasetDict from a file, a save_to_disk folder, a folder of data files or a hub id."""
    import datasets

    datasets.disable_progress_bars()  # one line per split and shard otherwise; the run's own bar says what happens
    local = Path(path).expanduser()
    try:
        if local.is_file():
            builder = BUILDERS.get("".join(local.suffixes[-1:]).lower())
            if builder is None:
                raise ValueError(f"{where}={path}: unknown file type {local.suffix!r}; use one of {', '.join(BUILDERS)}")
            return datasets.load_dataset(builder, data_files={"train": str(local)}, split="train")
        if local.is_dir() and any((local / f).exists() for f in ("dataset_dict.json", "state.json")):  # save_to_disk
            return datasets.load_from_disk(str(local))
        if local.exists() or path.startswith((".", "/", "~")) or local.suffix.lower() in BUILDERS:
            if not local.exists():
                raise FileNotFoundError(f"{where}={path}: no such file or folder (relative paths start where you run train.py)")
            return datasets.load_dataset(str(local), name=name)
        return datasets.load_dataset(path, name=name)
    except (FileNotFoundError, ValueError):
        raise
    except Exception as err:  # the hub unreachable, an unreadable file, ...
        raise ValueError(
            f"{where}={path}: could not be read by datasets ({type(err).__name__}: {err}). Give a local JSON/JSONL/CSV/parquet "
            "file, a folder written by save_to_disk, or a hub id that can be reached from here."
        ) from err


def _split(data, split: str | None, where: str):
    """The named split of a DatasetDict (a single Dataset: itself; split None: the first split)."""
    import datasets

    if isinstance(data, datasets.Dataset):
        if split in ("train", None):
            return data
        raise ValueError(f"{where}: the data is a single split, not a split named {split!r}; use the default (train)")
    if split is None:
        return data[next(iter(data))]
    if split not in data:
        raise ValueError(f"{where}: no split {split!r}; the dataset has {', '.join(data.keys())}")
    return data[split]


def _is_conversation(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(m, dict) and "role" in m and "content" in m for m in value)


def _answer(raw: Any) -> str:
    """The final answer in an answer cell: boxed, else after ####, else the cell itself."""
    text = str(raw).strip()
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    hashed = after_hashes(text) if "####" in text else None
    return hashed if hashed is not None else text


class DatasetTask(Task):
    alphabet = None

    def __init__(
        self,
        path: str,
        *,
        name: str | None = None,
        train_split: str = "train",
        heldout_split: str | None = None,
        heldout_path: str | None = None,
        heldout_fraction: float = 0.1,
        seed: int = 0,
        question_column: str = "question",
        answer_column: str = "answer",
        solution_column: str | None = None,
    ) -> None:
        if not 0.0 <= heldout_fraction < 1.0:
            raise ValueError(f"task.heldout_fraction={heldout_fraction}: must be in [0, 1)")
        if heldout_split is not None and heldout_path is not None:
            raise ValueError("task.heldout_split and task.heldout_path both set: choose one (or neither, for a seeded fraction)")
        self.question_column, self.answer_column, self.solution_column = question_column, answer_column, solution_column
        data = _load(path, name=name, where="task.path")
        train = self._problems(_split(data, train_split, "task.train_split"), f"task.path={path} (split {train_split})")
        if heldout_split is not None:
            heldout = self._problems(_split(data, heldout_split, "task.heldout_split"), f"task.path={path} (split {heldout_split})")
        elif heldout_path is not None:
            other = _load(heldout_path, name=name, where="task.heldout_path")
            heldout = self._problems(_split(other, None, "task.heldout_path"), f"task.heldout_path={heldout_path}")
        else:
            train, heldout = split_off(train, heldout_fraction, seed)
        held_prompts = {p.prompt for p in heldout}
        self._train = [p for p in train if p.prompt not in held_prompts]
        self._heldout = heldout
        if not self._train:
            raise ValueError(f"task.path={path}: no training questions left after the held-out split ({len(heldout)} held out); "
                             "use more data or a smaller task.heldout_fraction")
        if not self._heldout:
            raise ValueError(f"task.path={path}: no held-out questions (task.heldout_fraction={heldout_fraction} of {len(train)} rounds "
                             "to 0); raise it, or give task.heldout_split=<split> / task.heldout_path=<file>")

    def _problems(self, rows, where: str) -> list[Problem]:
        """The rows as Problems, deduplicated by prompt (first kept)."""
        columns = list(rows.column_names)
        for key, column in (("question_column", self.question_column), ("answer_column", self.answer_column),
                            ("solution_column", self.solution_column)):
            if column is not None and column not in columns:
                raise ValueError(f"{where}: no column {column!r} (task.{key}); the columns are {', '.join(columns)}. "
                                 f"Set task.{key}=<one of them>")
        problems, seen = [], set()
        for i, row in enumerate(rows):
            question, raw_answer = row[self.question_column], row[self.answer_column]
            if raw_answer is None or str(raw_answer).strip() == "":
                raise ValueError(f"{where}, row {i}: empty answer in column {self.answer_column!r}")
            if _is_conversation(question):
                messages = tuple({"role": str(m["role"]), "content": str(m["content"])} for m in question)
                users = [m["content"] for m in messages if m["role"] == "user"]
                prompt = users[-1] if users else messages[-1]["content"]
                key = json.dumps(messages, sort_keys=True)
            elif isinstance(question, str) and question.strip():
                messages, prompt, key = None, question.strip(), question.strip()
            else:
                raise ValueError(f"{where}, row {i}: column {self.question_column!r} holds {type(question).__name__} {str(question)[:60]!r}, "
                                 "not a question (text, or a list of {role, content} messages)")
            if key in seen:
                continue
            seen.add(key)
            answer = _answer(raw_answer)
            solution = str(row[self.solution_column]) if self.solution_column else str(raw_answer).strip()
            if solution.strip() == answer:  # a bare answer: the warm start's target states it boxed
                solution = f"The answer is $\\boxed{{{answer}}}$."
            metadata = {k: v for k, v in row.items() if k not in (self.question_column, self.answer_column)}
            problems.append(Problem(prompt, answer, solution, messages=messages, metadata=metadata))
        return problems

    def train_problems(self) -> list[Problem]:
        return list(self._train)

    def heldout_problems(self) -> list[Problem]:
        return list(self._heldout)

    def sft_examples(self, n: int, seed: int) -> list[tuple[str, str]]:
        """`n` (prompt, worked solution) pairs from the train split (without replacement when possible)."""
        return [(p.prompt, p.solution) for p in draw(self._train, n, seed)]

    def extract_answer(self, completion: str) -> str | None:
        return final_answer(completion)

    def verify(self, problem: Problem, completion: str) -> bool:
        return equivalent(problem.answer, completion)

    def step_rewards(self, problem: Problem, completion: str) -> list[tuple[int, float]]:
        raise ValueError(
            "task=dataset has no step checker, so reward=verifier cannot judge steps (supervision=process). Use a learned "
            "process reward model trained on Monte-Carlo step labels: reward=model supervision=process reward.step_labels=mc"
        )
