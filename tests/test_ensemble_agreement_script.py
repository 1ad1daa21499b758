"""scripts/ensemble_agreement.py: an ensemble PRM's members against the verifier, at a run's start and checkpoint."""

from __future__ import annotations

import json
import math

import pytest
import torch

from grpo.pipeline import build, instantiate_clearly, load_policy
from grpo.rewards.base import supervise
from grpo_testkit import compose_config, load_script

QUICK = ["eval.every_n_steps=100", "eval.prompts=4", "eval.k_prompts=2"]


def ensemble_run(cache) -> list[str]:
    return ["reward=model", "supervision=process_min", "reward.ensemble.size=2", "reward.ensemble.aggregate=min",
            "rm_schedule=online", "rm_schedule.steps_per_iteration=1", "rm_schedule.rm_steps=2", "rm_schedule.eval_samples=0",
            "reward.initial_prompts=8", "reward.samples_per_prompt=2", "reward.initial_steps=2", "reward.batch_size=4",
            f"reward.cache_dir={cache}"]


@pytest.fixture(scope="module")
def script():
    return load_script("ensemble_agreement")


@pytest.fixture(scope="module")
def trained(base_overrides, tmp_path_factory):
    """A 2-step run with a 2-member PRM ensemble, its directory written as train.py writes it (.hydra/overrides.yaml)."""
    run_dir = tmp_path_factory.mktemp("run")
    overrides = base_overrides + QUICK + ensemble_run(tmp_path_factory.mktemp("cache"))
    module, datamodule, trainer = build(compose_config(overrides, output_dir=run_dir))
    trainer.fit(module, datamodule=datamodule)
    (run_dir / ".hydra").mkdir()
    (run_dir / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides + ["hydra.job.chdir=false"]))
    (ckpt,) = run_dir.rglob("last.ckpt")
    return run_dir, ckpt, overrides, module


def test_measures_start_and_checkpoint(script, trained, tmp_path):
    run_dir, ckpt, _, _ = trained
    out = tmp_path / "agreement.json"
    result = script.main([str(run_dir), "--checkpoint", str(ckpt), "--questions", "12", "--samples", "2", "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert result["end"]["step"] == 2
    for row in result.values():
        assert 0 < row["completions"] <= 24 and 0 <= row["right"] <= 1
        assert len(row["auroc"]["members"]) == 2 and list(row["corr"]) == ["0,1"]
        shares = row["pass"]
        if not math.isnan(shares["all"]):
            # all members pass <= each member passes <= any member passes; with aggregate=min the ensemble passes
            # exactly where every member does (sigmoid of the lowest logit is the lowest score)
            assert shares["all"] <= min(shares["members"]) <= max(shares["members"]) <= shares["any"]
            assert shares["aggregate"] == shares["all"]


def test_agreement_by_hand(script):
    # 5 completions, the 1st and 4th right; two members and their aggregate (the lower score)
    members = [[0.9, 0.6, 0.2, 0.7, 0.8], [0.8, 0.7, 0.6, 0.9, 0.1]]
    combined = [min(a, b) for a, b in zip(*members)]
    row = script.agreement(members, combined, [True, False, False, True, False])
    assert row["completions"] == 5 and row["right"] == pytest.approx(0.4)
    # member 0: right {0.9, 0.7} above wrong {0.6, 0.2, 0.8} in 5 of 6 pairs; member 1: {0.8, 0.9} above {0.7, 0.6, 0.1}: 6 of 6
    assert row["auroc"]["members"] == pytest.approx([5 / 6, 1.0])
    assert row["auroc"]["aggregate"] == pytest.approx(1.0)  # right {0.8, 0.7} over wrong {0.6, 0.2, 0.1}
    # the wrong ones (0.6, 0.7), (0.2, 0.6), (0.8, 0.1): member 0 passes 2 of 3, member 1 2 of 3, both 1, either 3
    assert row["pass"]["members"] == pytest.approx([2 / 3, 2 / 3])
    assert (row["pass"]["aggregate"], row["pass"]["all"], row["pass"]["any"]) == pytest.approx((1 / 3, 1 / 3, 1.0))
    # correlation of (0.6, 0.2, 0.8) with (0.7, 0.6, 0.1): deviations (1, -5, 4) / 15 and (3.5, 2, -5.5) / 15:
    # -1.9 / sqrt(0.28 * 0.31) = -0.644902
    assert row["corr"]["0,1"] == pytest.approx(-0.644902, abs=1e-5)


def test_the_checkpoint_s_policy_and_members_are_what_the_run_ended_with(script, trained):
    _, ckpt, overrides, module = trained
    cfg = compose_config(overrides, output_dir=ckpt.parent)
    task, policy, tokenizer = load_policy(cfg)  # the warm start
    reward = supervise(instantiate_clearly(cfg.reward), True).bind(task, policy=policy, tokenizer=tokenizer)
    assert any(not torch.equal(a, b) for a, b in zip(policy.parameters(), module.policy.parameters()))
    script.load_checkpoint(torch.load(ckpt, map_location="cpu", weights_only=False), policy, reward)
    for a, b in zip(policy.parameters(), module.policy.parameters()):
        assert torch.equal(a, b.cpu())
    for mine, theirs in zip(reward.members, module.rollout.reward.members):
        for a, b in zip(mine.parameters(), theirs.parameters()):
            assert torch.equal(a, b.cpu())


def test_refuses_a_run_without_an_ensemble_or_without_its_files(script, base_overrides, tmp_path):
    with pytest.raises(SystemExit, match="overrides.yaml is missing"):
        script.main([str(tmp_path)])
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "overrides.yaml").write_text("- reward=model\n- supervision=process\n")
    with pytest.raises(SystemExit, match="last.ckpt is missing"):
        script.main([str(tmp_path)])
    (tmp_path / "last.ckpt").write_bytes(b"")
    with pytest.raises(SystemExit, match="has no PRM ensemble"):
        script.main([str(tmp_path), "--checkpoint", str(tmp_path / "last.ckpt")] + base_overrides)
