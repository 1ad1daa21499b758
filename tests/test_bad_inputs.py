"""Every bad input a new user is known to try, in one table: each stops with a message that says what is wrong
and how to fix it (the words asserted here), before anything is trained or overwritten.

Kinds of case:
- "config": the command line composes, then the settings check (or a component's own check) refuses it,
  before any model is built (no warm start appears in the cache);
- "compose": Hydra itself refuses the command line (an unknown option or key);
- "run": `python train.py ...` as a user runs it (pipeline.run, with the session's cached debug warm start):
  bad files, checkpoints, models, rewards and tasks.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import torch
from hydra.errors import HydraException

from grpo.checks import ConfigError
from grpo.pipeline import build, run
from grpo.rewards.base import RewardError
from grpo.rewards.verifier import VerifierReward
from grpo.tasks.arithmetic import ArithmeticTask
from grpo_testkit import GSM8K_FIXTURE, compose_config


@dataclass
class Case:
    id: str
    kind: str  # config | compose | run
    overrides: list[str]
    error: type | tuple
    words: list[str]  # regexes the message must contain: what is wrong and the fix
    files: Callable[[Path], dict[str, str]] | None = field(default=None, repr=False)  # tmp -> {placeholder: path}


# ---- bad rewards and tasks, importable by `_target_` from the command line -------------------------------
class NaNForOneReward(VerifierReward):
    name = "nan_for_one"

    def outcome(self, problems, completions):
        values = [1.0, 0.0] * (len(completions) // 2)
        values[3] = math.nan
        return values


class InfForAllReward(VerifierReward):
    name = "inf_for_all"

    def outcome(self, problems, completions):
        return torch.full((len(completions),), math.inf)


class TextReward(VerifierReward):
    name = "text_reward"

    def outcome(self, problems, completions):
        return ["good"] * len(completions)


class ShortReward(VerifierReward):
    name = "short_reward"

    def outcome(self, problems, completions):
        return [1.0]


class RaisingReward(VerifierReward):
    def outcome(self, problems, completions):
        raise RuntimeError("my reward server is down")


def nan_component(problems, completions):  # reward components: fn(problems, completions) -> list[float | None]
    return [math.nan] + [1.0] * (len(completions) - 1)


def raising_component(problems, completions):
    raise RuntimeError("my judge is down")


def short_component(problems, completions):
    return [1.0]


def abstaining_component(problems, completions):
    return [None] * len(completions)


class StringVerifyTask(ArithmeticTask):
    def verify(self, problem, completion):
        return "correct"


class NoneVerifyTask(ArithmeticTask):
    def verify(self, problem, completion):
        return None


# ---- files -----------------------------------------------------------------------------------------------
def gsm8k_lines(n: int) -> list[str]:
    return GSM8K_FIXTURE.read_text().splitlines()[:n]


def write(tmp: Path, name: str, text: str) -> str:
    path = tmp / name
    path.write_text(text)
    return str(path)


def checkpoint_files(tmp: Path) -> dict[str, str]:
    real = tmp / "real.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1000)}}, real)
    return {"text": write(tmp, "notes.ckpt", "not a checkpoint\n"), "cut": write_bytes(tmp / "cut.ckpt", real.read_bytes()[:500])}


def write_bytes(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


GSM8K_FILES = lambda tmp: {  # noqa: E731
    "missing": str(tmp / "no" / "train.jsonl"),
    "empty": write(tmp, "empty.jsonl", ""),
    "two": write(tmp, "two.jsonl", "\n".join(gsm8k_lines(2)) + "\n"),
    "badjson": write(tmp, "bad.jsonl", gsm8k_lines(1)[0] + "\n{not json\n"),
    "noanswer": write(tmp, "noanswer.jsonl", json.dumps({"question": "How many?"}) + "\n"),
    "nohash": write(tmp, "nohash.jsonl", json.dumps({"question": "How many?", "answer": "It is 4."}) + "\n"),
    "list": write(tmp, "list.jsonl", "[1, 2]\n"),
}
GSM8K = ["task=gsm8k", "task.heldout_fraction=0.25"]
QUICK = ["eval.every_n_steps=100", "eval.prompts=2", "eval.batch_size=2", "eval.k_prompts=1"]  # a short evaluation first
HERE = __name__

CASES = [
    # ---- settings (conf/train.yaml and the groups)
    Case("group_size=1", "config", ["grpo.group_size=1"], ConfigError, [r"grpo\.group_size=1", r"at least 2 outputs", r"grpo\.group_size=8"]),
    Case("group_size=0", "config", ["grpo.group_size=0"], ConfigError, [r"grpo\.group_size=0", r"grpo\.group_size=8"]),
    Case("group_size=abc", "config", ["grpo.group_size=abc"], ConfigError, [r"grpo\.group_size='abc' must be an integer", r"grpo\.group_size=8"]),
    Case("prompts_per_step=0", "config", ["grpo.prompts_per_step=0"], ConfigError, [r"grpo\.prompts_per_step=0", r"at least 1"]),
    Case("minibatch_prompts=3", "config", ["grpo.minibatch_prompts=3"], ConfigError, [r"does not divide grpo\.prompts_per_step=16", r"grpo\.minibatch_prompts=8", "null"]),
    Case("minibatch_prompts=0", "config", ["grpo.minibatch_prompts=0"], ConfigError, [r"grpo\.minibatch_prompts=0", "divisor"]),
    Case("mu=0", "config", ["grpo.mu=0"], ConfigError, [r"grpo\.mu=0", r"at least 1"]),
    Case("steps=0", "config", ["grpo.steps=0"], ConfigError, [r"grpo\.steps=0", r"at least 1"]),
    Case("steps=ten", "config", ["grpo.steps=ten"], ConfigError, [r"grpo\.steps='ten' must be an integer"]),
    Case("aggregation=mean", "config", ["grpo.aggregation=mean"], ConfigError, [r"grpo\.aggregation='mean' is not known", "sequence, token, constant"]),
    Case("ratio_level=word", "config", ["grpo.ratio_level=word"], ConfigError, [r"grpo\.ratio_level='word' is not known", "token, sequence"]),
    Case("beta=-0.1", "config", ["grpo.beta=-0.1"], ConfigError, [r"grpo\.beta=-0\.1", ">= 0"]),
    Case("beta=abc", "config", ["grpo.beta=abc"], ConfigError, [r"grpo\.beta='abc' must be a number", r"grpo\.beta=0\.04"]),
    Case("epsilon=0", "config", ["grpo.epsilon=0"], ConfigError, [r"grpo\.epsilon=0", r"\(0, 1\)"]),
    Case("epsilon=1.5", "config", ["grpo.epsilon=1.5"], ConfigError, [r"grpo\.epsilon=1\.5", r"\(0, 1\)"]),
    Case("epsilon_high=0", "config", ["grpo.epsilon_high=0"], ConfigError, [r"grpo\.epsilon_high=0", "> 0"]),
    Case("temperature=0", "config", ["sampling.temperature=0"], ConfigError, [r"sampling\.temperature=0", "must sample", "> 0"]),
    Case("temperature=-1", "config", ["sampling.temperature=-1.0"], ConfigError, [r"sampling\.temperature=-1\.0", "> 0"]),
    Case("top_p=0", "config", ["sampling.top_p=0"], ConfigError, [r"sampling\.top_p=0", r"\(0, 1\]"]),
    Case("top_p=1.5", "config", ["sampling.top_p=1.5"], ConfigError, [r"sampling\.top_p=1\.5", r"\(0, 1\]"]),
    Case("max_new_tokens=0", "config", ["sampling.max_new_tokens=0"], ConfigError, [r"sampling\.max_new_tokens=0", r"at least 1", r"sampling\.max_new_tokens=48"]),
    Case("eval.prompts=0", "config", ["eval.prompts=0"], ConfigError, [r"eval\.prompts=0", r"at least 1"]),
    Case("eval.k_prompts=2000", "config", ["eval.k_prompts=2000"], ConfigError, [r"eval\.k_prompts=2000 exceeds eval\.prompts=1000", "lower it"]),
    Case("eval.batch_size=0", "config", ["eval.batch_size=0"], ConfigError, [r"eval\.batch_size=0", r"at least 1"]),
    Case("eval.every_n_steps=0", "config", ["eval.every_n_steps=0"], ConfigError, [r"eval\.every_n_steps=0", r"at least 1"]),
    Case("scale_rewards=foo", "config", ["grpo.scale_rewards=foo"], ConfigError, [r"grpo\.scale_rewards='foo' is not known", "true", "batch", "false"]),
    Case("mask_truncated=maybe", "config", ["grpo.mask_truncated=maybe"], ConfigError, [r"grpo\.mask_truncated='maybe' must be true or false"]),
    Case("dynamic_sampling.enabled=yes", "config", ["grpo.dynamic_sampling.enabled=yes"], ConfigError,
         [r"grpo\.dynamic_sampling\.enabled='yes' must be true or false"]),
    Case("max_extra_batches=-1", "config", ["grpo.dynamic_sampling.max_extra_batches=-1"], ConfigError,
         [r"grpo\.dynamic_sampling\.max_extra_batches=-1", r"at least 0", r"max_extra_batches=4"]),
    Case("dynamic groups=0", "config", ["grpo.dynamic_sampling.enabled=true", "grpo.dynamic_sampling.groups=0"], ConfigError,
         [r"grpo\.dynamic_sampling\.groups=0", r"at least 1"]),
    Case("dynamic groups unfillable", "config", ["grpo.dynamic_sampling.enabled=true", "grpo.dynamic_sampling.groups=100"], ConfigError,
         [r"grpo\.dynamic_sampling\.groups=100 can never be filled", "= 80 groups", "raise max_extra_batches"]),
    Case("minibatch vs dynamic groups", "config", ["grpo.dynamic_sampling.enabled=true", "grpo.dynamic_sampling.groups=12", "grpo.minibatch_prompts=8"],
         ConfigError, [r"grpo\.minibatch_prompts=8 does not divide grpo\.dynamic_sampling\.groups=12", r"grpo\.minibatch_prompts=6"]),
    Case("invalid_reward=skip", "config", ["rollout.invalid_reward=skip"], ConfigError, [r"rollout\.invalid_reward='skip' is not known", "error", "zero"]),
    Case("several at once", "config", ["grpo.group_size=1", "sampling.temperature=0", "grpo.aggregation=mean"], ConfigError,
         [r"Invalid settings:\n  - grpo\.group_size=1", r"\n  - sampling\.temperature=0", r"\n  - grpo\.aggregation='mean'"]),
    Case("gsm8k without train_path", "config", ["task=gsm8k"], ConfigError, [r"task\.train_path is required", r"task\.train_path=<value>"]),
    Case("hf without name_or_path", "config", ["model=hf"], ConfigError, [r"model\.name_or_path is required"]),
    Case("arith too small", "config", ["task.max_operand=2", "task.num_ops_max=2"], ValueError, ["problem space is too small", "lower the sizes or raise max_operand"]),
    Case("arch unknown field", "config", ["+model.arch.depth=3"], (ValueError, TypeError), [r"model\.arch", "depth", "hidden_size"]),
    Case("orm for process", "config", ["reward=model", "supervision=process", "reward.kind=orm"], ValueError, ["reward.kind=orm scores whole outputs", "reward.kind=prm"]),
    Case("component not importable", "config", ["reward=weighted", "+reward.components.mine.fn=no_such_module.my_reward"], ValueError,
         [r"reward\.components\.mine\.fn='no_such_module\.my_reward' cannot be imported", "PYTHONPATH"]),
    Case("component weight text", "config", ["reward=math", "reward.components.format.weight=high"], ValueError,
         [r"reward\.components\.format\.weight='high' must be a finite number"]),
    Case("components on a single reward", "config", ["+reward.components.mine.fn=my_rewards.mine"], ConfigError,
         [r"reward\.components is given, but reward grpo\.rewards\.verifier\.VerifierReward is a single reward", "reward=weighted"]),
    Case("steps_per_iteration=0", "config", ["rm_schedule=iterative", "rm_schedule.steps_per_iteration=0"], ValueError,
         [r"rm_schedule\.steps_per_iteration=0", "at least 1 GRPO step"]),
    # ---- Hydra refuses the command line
    Case("kl=k9", "compose", ["kl=k9"], HydraException, ["kl/k9|kl=k9", "k1", "k2", "k3"]),
    Case("supervision=reward_model", "compose", ["supervision=reward_model"], HydraException, ["supervision", "outcome", "process", "rloo"]),
    Case("typo in a key", "compose", ["grpo.group_sise=8"], HydraException, ["group_sise"]),
    # ---- files: GSM8K
    Case("gsm8k missing file", "run", [*GSM8K, "task.train_path={missing}"], FileNotFoundError, ["GSM8K file not found", r"task\.train_path="], GSM8K_FILES),
    Case("gsm8k empty file", "run", [*GSM8K, "task.train_path={empty}"], ValueError, ["no training questions", "more of them"], GSM8K_FILES),
    Case("gsm8k 2 lines", "run", [*GSM8K, "task.heldout_fraction=0.1", "task.train_path={two}"], ValueError,
         ["No held-out questions", r"task\.heldout_fraction=0\.1 of the 2 questions", r"task\.heldout_path"], GSM8K_FILES),
    Case("gsm8k bad json", "run", [*GSM8K, "task.train_path={badjson}"], ValueError, [r"bad\.jsonl, line 2: invalid JSON"], GSM8K_FILES),
    Case("gsm8k no answer", "run", [*GSM8K, "task.train_path={noanswer}"], ValueError, ["line 1: missing string field 'answer'"], GSM8K_FILES),
    Case("gsm8k no ####", "run", [*GSM8K, "task.train_path={nohash}"], ValueError, [r"line 1: answer has no final '#### <number>' line"], GSM8K_FILES),
    Case("gsm8k not an object", "run", [*GSM8K, "task.train_path={list}"], ValueError, ["line 1: expected a JSON object with 'question' and 'answer'"], GSM8K_FILES),
    # ---- models and checkpoints
    Case("hf missing dir", "run", ["model=hf", "model.name_or_path=/nonexistent/model"], ValueError,
         [r"model\.name_or_path='/nonexistent/model'", "neither a local directory", "Pass a local path"]),
    Case("ckpt missing", "run", ["ckpt_path=/nonexistent/last.ckpt"], FileNotFoundError, [r"ckpt_path=/nonexistent/last\.ckpt does not exist", "last.ckpt"]),
    Case("ckpt a text file", "run", ["ckpt_path={text}"], ConfigError, [r"notes\.ckpt is not a checkpoint", "checkpoints/"], checkpoint_files),
    Case("ckpt cut short", "run", ["ckpt_path={cut}"], ConfigError, [r"cut\.ckpt is not a checkpoint", "cut short"], checkpoint_files),
    # ---- rewards and tasks: stopped at scoring, before any update
    Case("reward NaN for one", "run", [f"reward._target_={HERE}.NaNForOneReward"], RewardError,
         [r"reward nan_for_one\.outcome returned 1 value\(s\) that are not finite numbers", "nan", r"rollout\.invalid_reward=zero"]),
    Case("reward inf for all", "run", [f"reward._target_={HERE}.InfForAllReward"], RewardError,
         [r"reward inf_for_all\.outcome returned 16 value\(s\)", "inf", "Fix the reward function"]),
    Case("reward returns text", "run", [f"reward._target_={HERE}.TextReward"], RewardError, [r"text_reward\.outcome returned 16 value", "'good'"]),
    Case("reward wrong count", "run", [f"reward._target_={HERE}.ShortReward"], RewardError, [r"short_reward\.outcome returned 1 values for 16 completions", "one float per completion"]),
    Case("reward raises", "run", [f"reward._target_={HERE}.RaisingReward"], RewardError, [r"reward RaisingReward\.outcome raised RuntimeError: my reward server is down"]),
    Case("component NaN", "run", ["reward=weighted", f"+reward.components.mine.fn={HERE}.nan_component"], RewardError,
         [r"reward mine\.outcome returned 1 value\(s\) that are not finite numbers", "nan", r"rollout\.invalid_reward=zero"]),
    Case("component raises", "run", ["reward=math", f"+reward.components.mine.fn={HERE}.raising_component"], RewardError,
         [r"reward mine\.outcome raised RuntimeError: my judge is down"]),
    Case("component wrong count", "run", ["reward=weighted", f"+reward.components.mine.fn={HERE}.short_component"], RewardError,
         [r"reward mine\.outcome returned 1 values for 16 completions", "one float per completion", "None where it abstains"]),
    Case("components all abstain", "run", ["reward=weighted", "~reward.components.verifier", f"+reward.components.a.fn={HERE}.abstaining_component",
                                          f"+reward.components.b.fn={HERE}.abstaining_component"], RewardError,
         [r"every component \(a, b\) abstained \(returned None\) on 16 completion\(s\)", r"rollout\.invalid_reward=zero"]),
    Case("verify returns str", "run", ["task=custom", f"task._target_={HERE}.StringVerifyTask", "warmstart.steps=0"], TypeError, [r"StringVerifyTask\.verify must return a bool", "str 'correct'"]),
    Case("verify returns None", "run", ["task=custom", f"task._target_={HERE}.NoneVerifyTask", "warmstart.steps=0"], TypeError, [r"NoneVerifyTask\.verify must return a bool", "NoneType None"]),
]


def test_there_are_at_least_40_cases():
    assert len(CASES) >= 40 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_explained(case, base_overrides, tmp_path):
    files = case.files(tmp_path) if case.files else {}
    overrides = [o.format(**files) for o in case.overrides]
    cache = tmp_path / "cache"
    hf = "model=hf" in overrides  # its model has no cache (model.cache_dir belongs to the built-in one)
    if case.kind == "compose":
        with pytest.raises(case.error) as err:
            compose_config(overrides, output_dir=tmp_path / "run")
    elif case.kind == "config":
        cfg = compose_config([*overrides, *([] if hf else [f"model.cache_dir={cache}"])], output_dir=tmp_path / "run")
        with pytest.raises(case.error) as err:
            build(cfg)
        assert not any(p.is_dir() for p in cache.glob("warmstart-*")), "refused only after building a model"
    else:
        common = [o for o in base_overrides if not (hf and o.startswith("model.cache_dir="))]
        cfg = compose_config([*common, *overrides, *QUICK], output_dir=tmp_path / "run")
        with pytest.raises(case.error) as err:
            run(cfg)
        assert not (tmp_path / "run" / "export").exists()  # stopped before the end of a run
    message = str(err.value)
    for words in case.words:
        assert re.search(words, message), f"{words!r} not in: {message}"
