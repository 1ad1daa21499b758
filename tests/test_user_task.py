"""A user's own Task class, in their own module outside the project, plugs in by config alone (task=custom)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from grpo.checks import ConfigError
from grpo.pipeline import build
from grpo_testkit import REPO, compose_config

USER_MODULE = textwrap.dedent('''
    from grpo.tasks.arithmetic import ArithmeticTask

    class Doubling(ArithmeticTask):
        """Questions "Q:a+a=": a user's task with its own arguments (none of ArithmeticTask's)."""

        def __init__(self, largest: int, heldout: int = 20):
            super().__init__(num_ops_min=1, num_ops_max=1, max_operand=largest, train_size=0, heldout_size=0)
            self.largest, self.heldout = largest, heldout

        def _generate(self):
            from grpo.tasks.base import Problem
            problems = [Problem(f"Q:{a}+{a}=", str(2 * a), f"{a}+{a}={2 * a};A:{2 * a}") for a in range(1, self.largest + 1)]
            return problems[self.heldout:], problems[: self.heldout]

    class Harder(ArithmeticTask):
        """A user's subclass that takes every setting of task=arithmetic (its own __init__ is ArithmeticTask's)."""
''')


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "mytasks.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("mytasks", None)


def test_a_user_task_by_config_alone(user_module, base_overrides, tmp_path):
    cfg = compose_config(base_overrides + ["task=custom", "task._target_=mytasks.Doubling", "+task.largest=60", "warmstart.steps=2"],
                         output_dir=tmp_path / "run")
    module, datamodule, _ = build(cfg)
    datamodule.setup("fit")
    assert type(module.task.task).__name__ == "Doubling"
    assert {p.prompt for p in datamodule.train_pool} == {f"Q:{a}+{a}=" for a in range(21, 61)}
    assert [p.answer for p in datamodule.heldout[:3]] == ["2", "4", "6"]


def test_replacing_the_target_of_another_task_option_says_to_start_from_custom(user_module, base_overrides, tmp_path):
    cfg = compose_config(base_overrides + ["task._target_=mytasks.Doubling", "+task.largest=60"], output_dir=tmp_path / "run")
    with pytest.raises(ConfigError, match=r"task=custom task._target_=mytasks.Doubling \+task.<argument>=<value>") as err:
        build(cfg)
    assert "num_ops_min" in str(err.value)  # the setting left over from task=arithmetic


@pytest.mark.parametrize("choice", [[], ["task=arithmetic"], ["task=arithmetic_lines"]], ids=["debug=default", "arithmetic", "lines"])
def test_replacing_the_target_of_a_builtin_option_is_refused_even_when_the_class_takes_its_settings(
        user_module, base_overrides, tmp_path, choice):
    """debug=default chooses task=arithmetic_debug: a class that accepts its settings was run with them (issue 19)."""
    cfg = compose_config(base_overrides + choice + ["task._target_=mytasks.Harder"], output_dir=tmp_path / "run")
    with pytest.raises(ConfigError, match=r"task=custom task._target_=mytasks.Harder \+task.<argument>=<value>") as err:
        build(cfg)
    assert "num_ops_min" in str(err.value) and "replaces the class of task=" in str(err.value)


def test_a_custom_task_without_target_is_named(base_overrides, tmp_path):
    cfg = compose_config(base_overrides + ["task=custom"], output_dir=tmp_path / "run")
    with pytest.raises(ConfigError, match=r"task._target_ is required"):
        build(cfg)


@pytest.mark.slow
def test_train_py_finds_a_module_in_the_folder_it_is_run_from(user_module, base_overrides, tmp_path):
    """python /path/to/train.py task=custom task._target_=mytasks.Doubling, run from the folder holding mytasks.py."""
    out = tmp_path / "run"
    args = [sys.executable, str(REPO / "train.py"), *base_overrides, "task=custom", "task._target_=mytasks.Doubling", "+task.largest=60",
            "warmstart.steps=2", "grpo.steps=1", "eval.prompts=8", "eval.k=0", f"hydra.run.dir={out}"]
    result = subprocess.run(args, cwd=user_module, capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": ""})
    assert result.returncode == 0, result.stderr[-2000:]
    assert (out / "export" / "config.json").exists()
