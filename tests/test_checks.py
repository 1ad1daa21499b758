"""What the settings check lets through, and what a refused setting or checkpoint leaves behind (nothing new,
nothing lost). Every bad input and its message: tests/test_bad_inputs.py."""

from __future__ import annotations

import pytest

from grpo.checks import ConfigError, check_config
from grpo.pipeline import build, run
from grpo_testkit import GSM8K_FIXTURE, compose_config


@pytest.mark.parametrize("overrides", [[], ["debug=default"], ["grpo.minibatch_prompts=4", "grpo.mu=2"], ["kl=k1", "grpo.beta=0"],
                                       ["supervision=rloo", "loss=cispo"], ["rollout.invalid_reward=zero"]])
def test_good_settings_pass(overrides, tmp_path):
    check_config(compose_config(overrides, output_dir=tmp_path))


def test_one_problem_one_line(tmp_path):
    with pytest.raises(ConfigError) as err:
        check_config(compose_config(["sampling.top_p=0"], output_dir=tmp_path))
    assert str(err.value).count("\n  - ") == 1 and isinstance(err.value, ValueError)


def test_build_checks_before_loading_anything(tmp_path):
    cache = tmp_path / "cache"
    cfg = compose_config(["grpo.aggregation=mean", f"model.cache_dir={cache}"], output_dir=tmp_path / "run")
    with pytest.raises(ConfigError, match=r"grpo\.aggregation"):
        build(cfg)
    assert not cache.exists() and not (tmp_path / "run").exists()  # no warm start, no output


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
