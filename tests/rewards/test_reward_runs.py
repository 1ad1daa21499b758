"""Reward components in real runs (debug=default, seconds): a user's function from its own module by config
alone, the zero policy for a bad component, the learned reward model combined with a rule reward under the
iterative schedule (retrained, checkpointed), and logger=wandb writing an offline run with a samples table."""

from __future__ import annotations

import json
import math
import textwrap

import pytest
import torch

from grpo.pipeline import build, run
from grpo_testkit import compose_config, read_scalars

QUICK = ["eval.every_n_steps=100", "eval.prompts=4", "eval.k_prompts=2"]  # the run's own evaluation kept short

USER_MODULE = '''
def quarter_unless_empty(problems, completions):
    """0.25 for each non-empty completion; abstains (None) on an empty one."""
    assert all(hasattr(p, "metadata") and p.answer for p in problems)
    return [0.25 if c else None for c in completions]


def nan_on_first(problems, completions):
    return [float("nan")] + [0.0] * (len(completions) - 1)
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A module outside the project, importable as a user's would be (on sys.path)."""
    folder = tmp_path / "user_code"
    folder.mkdir()
    (folder / "my_rewards.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.syspath_prepend(str(folder))
    return "my_rewards"


@pytest.mark.parametrize("supervision", ["outcome", "process"])
def test_users_reward_function_plugs_in_by_config_alone(supervision, user_module, base_overrides, tmp_path):
    """python train.py debug=default reward=weighted +reward.components.mine.fn=my_rewards.quarter_unless_empty
    +reward.components.mine.weight=0.5 [supervision=process]"""
    mine = [f"+reward.components.mine.fn={user_module}.quarter_unless_empty", "+reward.components.mine.weight=0.5"]
    cfg = compose_config(base_overrides + QUICK + ["reward=weighted", f"supervision={supervision}", *mine], output_dir=tmp_path / "run")
    module, datamodule, trainer = build(cfg)
    trainer.fit(module, datamodule=datamodule)

    scalars = read_scalars(tmp_path / "run" / "tb")
    assert [v for _, v in scalars["rollout/reward/mine"]] == [0.25, 0.25]  # its mean where it did not abstain, each step
    assert len(scalars["rollout/reward/verifier"]) == 2 and "rollout/reward/correct" not in scalars
    last = module.last_rollout
    texts = [c for _, c, _ in last.samples]
    assert last.components["mine"] == [0.25 if c else None for c in texts]
    if supervision == "outcome":  # reward = verifier + 0.5 * mine, mine left out where it abstained
        for (_, text, reward), right, m in zip(last.samples, last.components["verifier"], last.components["mine"]):
            assert reward == pytest.approx(right + (0.5 * m if m is not None else 0.0), abs=1e-6)


def test_a_bad_component_counts_as_zero_with_the_zero_policy(user_module, base_overrides, tmp_path):
    """rollout.invalid_reward=zero: a NaN from a component counts as 0, is logged, and never reaches the loss."""
    cfg = compose_config(base_overrides + QUICK + ["reward=weighted", f"+reward.components.bad.fn={user_module}.nan_on_first",
                                                   "rollout.invalid_reward=zero"], output_dir=tmp_path / "run")
    module, datamodule, trainer = build(cfg)
    trainer.fit(module, datamodule=datamodule)
    scalars = read_scalars(tmp_path / "run" / "tb")
    assert [v for _, v in scalars["rollout/invalid_rewards"]] == [1.0, 1.0]  # one per step
    assert [v for _, v in scalars["rollout/reward/bad"]] == [0.0, 0.0]
    assert all(math.isfinite(v) for _, v in scalars["train/loss"])
    assert torch.isfinite(module.last_rollout.batch.advantages).all()


def test_learned_reward_model_combined_with_a_rule_reward_is_retrained_and_checkpointed(base_overrides, tmp_path):
    """python train.py debug=default reward=math +reward@reward.components.model.fn=model rm_schedule=iterative"""
    rm = "reward.components.model.fn"
    cfg = compose_config(base_overrides + QUICK + [
        "reward=math", f"+reward@{rm}=model", "+reward.components.model.weight=0.5", "rm_schedule=iterative",
        f"{rm}.initial_prompts=8", f"{rm}.samples_per_prompt=2", f"{rm}.initial_steps=3", f"{rm}.batch_size=8",
        f"{rm}.cache_dir={tmp_path / 'cache'}", "rm_schedule.rm_steps=5", "rm_schedule.eval_samples=8",
    ], output_dir=tmp_path / "run")
    module, datamodule, trainer = build(cfg)
    reward = module.rollout.reward
    assert list(reward.components) == ["correct", "format", "model"]
    model = reward.components["model"].fn
    before = {k: v.clone() for k, v in model.model.state_dict().items()}
    trainer.fit(module, datamodule=datamodule)

    scalars = read_scalars(tmp_path / "run" / "tb")
    assert len(scalars["rm/accuracy_after"]) == 2  # the schedule found the learned component and retrained it each step
    assert all(0.0 <= v <= 1.0 for _, v in scalars["rollout/reward/model"])
    assert any(not torch.equal(before[k], v) for k, v in model.model.state_dict().items())
    (ckpt,) = (tmp_path / "run").rglob("last.ckpt")
    state = torch.load(ckpt, weights_only=False)["reward_state"]
    assert set(state) == {"model"}  # keyed by component name: the rule rewards have no state
    for k, v in model.model.state_dict().items():
        assert torch.equal(state["model"]["reward_model"][k], v.cpu())


def test_logger_wandb_writes_an_offline_run_with_a_samples_table(base_overrides, tmp_path):
    """python train.py debug=default logger=wandb reward=math: no network, no account."""
    wandb = pytest.importorskip("wandb")
    cfg = compose_config(base_overrides + QUICK + ["logger=wandb", "reward=math"], output_dir=tmp_path / "run")
    try:
        run(cfg)
    finally:
        wandb.finish()  # never leak a run into the next test
    (run_dir,) = (tmp_path / "run" / "wandb").glob("offline-run-*")
    assert list(run_dir.glob("*.wandb")), "the offline run's data file"
    tables = sorted(run_dir.rglob("*.table.json"))
    assert len(tables) == 2  # one samples table per GRPO step
    table = json.loads(tables[-1].read_text())
    assert table["columns"] == ["prompt", "completion", "reward", "correct", "format"]
    assert len(table["data"]) == 4  # module.log_samples rows
    for prompt, completion, reward, correct, fmt in table["data"]:
        assert reward == pytest.approx(correct + 0.1 * fmt, abs=1e-6)
