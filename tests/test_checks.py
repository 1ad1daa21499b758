"""Bad settings fail before anything runs, with a message that names the key and says what to change
(grpo.checks.check_config, and the pipeline's own checks for files that do not exist)."""

from __future__ import annotations

import re

import pytest
from hydra.errors import HydraException

from grpo.checks import ConfigError, check_config
from grpo.pipeline import build, run
from grpo_testkit import GSM8K_FIXTURE, compose_config

# (overrides, the key the message must name, a regex for the fix it must suggest)
BAD_SETTINGS = [
    (["grpo.group_size=1"], "grpo.group_size=1", r"grpo\.group_size=8"),
    (["grpo.group_size=0"], "grpo.group_size=0", r"grpo\.group_size=8"),
    (["grpo.prompts_per_step=0"], "grpo.prompts_per_step=0", r"at least 1"),
    (["grpo.minibatch_prompts=3"], "grpo.minibatch_prompts=3", r"grpo\.minibatch_prompts=8\b.*null"),  # 16 % 3 != 0
    (["debug=default", "grpo.minibatch_prompts=3"], "grpo.minibatch_prompts=3", r"grpo\.minibatch_prompts=2\b"),
    (["grpo.minibatch_prompts=0"], "grpo.minibatch_prompts=0", r"divisor"),
    (["grpo.mu=0"], "grpo.mu=0", r"at least 1"),
    (["grpo.aggregation=mean"], "grpo.aggregation='mean'", r"sequence.*token.*constant"),
    (["grpo.ratio_level=word"], "grpo.ratio_level='word'", r"token.*sequence"),
    (["grpo.beta=-0.1"], "grpo.beta=-0.1", r">= 0"),
    (["grpo.group_size=abc"], "grpo.group_size='abc'", r"must be an integer.*grpo\.group_size=8"),
    (["sampling.max_new_tokens=0"], "sampling.max_new_tokens=0", r"at least 1"),
    (["eval.prompts=0"], "eval.prompts=0", r"at least 1"),
    (["grpo.epsilon=0"], "grpo.epsilon=0", r"\(0, 1\)"),
    (["grpo.epsilon=1.5"], "grpo.epsilon=1.5", r"\(0, 1\)"),
    (["grpo.epsilon_high=0"], "grpo.epsilon_high=0", r"> 0"),
    (["grpo.steps=0"], "grpo.steps=0", r"at least 1"),
    (["sampling.temperature=0"], "sampling.temperature=0", r"> 0"),
    (["sampling.temperature=-1.0"], "sampling.temperature=-1.0", r"> 0"),
    (["sampling.top_p=0"], "sampling.top_p=0", r"\(0, 1\]"),
    (["sampling.top_p=1.5"], "sampling.top_p=1.5", r"\(0, 1\]"),
    (["eval.k_prompts=2000"], "eval.k_prompts=2000", r"eval\.prompts=1000.*lower"),
]


@pytest.mark.parametrize("overrides, key, fix", BAD_SETTINGS, ids=[" ".join(o) for o, _, _ in BAD_SETTINGS])
def test_bad_setting_names_key_and_fix(overrides, key, fix, tmp_path):
    cfg = compose_config(overrides, output_dir=tmp_path)
    with pytest.raises(ConfigError) as err:
        check_config(cfg)
    message = str(err.value)
    assert key in message
    assert re.search(fix, message, flags=re.S), message
    assert isinstance(err.value, ValueError)
    assert message.count("\n  - ") == 1  # exactly the one problem


@pytest.mark.parametrize("overrides", [[], ["debug=default"], ["grpo.minibatch_prompts=4", "grpo.mu=2"], ["kl=k1", "grpo.beta=0"]])
def test_good_settings_pass(overrides, tmp_path):
    check_config(compose_config(overrides, output_dir=tmp_path))


def test_all_problems_are_reported_at_once(tmp_path):
    cfg = compose_config(["grpo.group_size=1", "sampling.temperature=0", "grpo.aggregation=mean"], output_dir=tmp_path)
    with pytest.raises(ConfigError) as err:
        check_config(cfg)
    message = str(err.value)
    assert message.count("\n  - ") == 3
    assert all(k in message for k in ("grpo.group_size", "sampling.temperature", "grpo.aggregation"))


def test_build_checks_before_loading_anything(tmp_path):
    cache = tmp_path / "cache"
    cfg = compose_config(["grpo.aggregation=mean", f"model.cache_dir={cache}"], output_dir=tmp_path / "run")
    with pytest.raises(ConfigError, match=r"grpo\.aggregation"):
        build(cfg)
    assert not cache.exists() and not (tmp_path / "run").exists()  # no warm start, no output


def test_unknown_group_option_lists_the_choices(tmp_path):
    with pytest.raises(HydraException) as err:
        compose_config(["kl=k9"], output_dir=tmp_path)
    message = str(err.value)
    assert "kl/k9" in message or "kl=k9" in message
    assert all(option in message for option in ("k1", "k2", "k3"))


@pytest.mark.parametrize(
    "overrides, key",
    [(["task=gsm8k", "model.cache_dir={tmp}/cache"], "task.train_path"), (["model=hf"], "model.name_or_path")],
)
def test_required_value_left_unset_names_the_key(overrides, key, tmp_path):
    cfg = compose_config([o.format(tmp=tmp_path) for o in overrides], output_dir=tmp_path / "run")
    with pytest.raises(Exception, match=re.escape(key)):
        build(cfg)


def _gsm8k_missing_file(tmp_path):
    missing = tmp_path / "no" / "train.jsonl"
    overrides = ["task=gsm8k", f"task.train_path={missing}", f"model.cache_dir={tmp_path / 'cache'}"]
    return compose_config(overrides, output_dir=tmp_path / "run"), missing


def test_gsm8k_missing_train_file_message(tmp_path):
    cfg, missing = _gsm8k_missing_file(tmp_path)
    with pytest.raises(Exception) as err:
        build(cfg)
    message = str(err.value)
    assert str(missing) in message and "task.train_path=" in message
    assert not (tmp_path / "cache").exists()  # failed before any warm start


def test_gsm8k_missing_train_file_is_file_not_found(tmp_path):
    cfg, _ = _gsm8k_missing_file(tmp_path)
    with pytest.raises((FileNotFoundError, ConfigError), match=r"task\.train_path"):
        build(cfg)


def test_gsm8k_existing_file_passes(tmp_path, saved_tiny_model):
    cfg = compose_config(
        ["task=gsm8k", f"task.train_path={GSM8K_FIXTURE}", "model=hf", f"model.name_or_path={saved_tiny_model}"],
        output_dir=tmp_path,
    )
    module, datamodule, trainer = build(cfg)
    assert len(module.task.train_problems()) + len(module.task.heldout_problems()) == 12


def test_missing_ckpt_path_fails_before_training_and_deletes_nothing(tmp_path, base_overrides):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "tb").mkdir()
    keep = {out / "notes.txt": "mine", out / "checkpoints" / "last.ckpt.bak": "old", out / "tb" / "old.txt": "old"}
    for path, text in keep.items():
        path.write_text(text)
    missing = tmp_path / "nope" / "last.ckpt"
    cfg = compose_config(base_overrides + [f"ckpt_path={missing}"], output_dir=out)
    with pytest.raises(FileNotFoundError) as err:
        run(cfg)
    message = str(err.value)
    assert "ckpt_path" in message and str(missing) in message and "last.ckpt" in message
    for path, text in keep.items():
        assert path.read_text() == text
    # nothing trained, validated, logged or exported
    assert not (out / "export").exists()
    assert not list(out.rglob("*.ckpt")) and not list(out.rglob("events.out.tfevents.*"))
