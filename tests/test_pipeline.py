"""End-to-end smoke runs of grpo.pipeline.run on the tiny model: a 2-step debug run that really updates
the policy and logs what the README promises, and an interrupted-then-resumed run that reproduces the
uninterrupted one exactly."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra.utils import instantiate
from transformers import AutoModelForCausalLM, AutoTokenizer

from grpo.pipeline import build, load_policy, run, warm_start_key
from grpo.tasks.prompts import FormattedTask
from grpo_testkit import compose_config, read_scalars

# Rewards that differ inside each group whatever the policy (so these smoke runs never depend on the warm
# start's accuracy; test_debug_default_makes_real_updates_with_the_verifier runs the verifier itself).
SIGNAL = ["reward._target_=grpo_testkit.DigitShareReward"]

REQUIRED_SCALARS = [
    "rollout/reward_mean",
    "rollout/reward_std",
    "rollout/accuracy",
    "rollout/adv_std",
    "train/kl",
    "train/kl_k1",
    "train/kl_k2",
    "train/kl_k3",
    "train/clip_frac",
    "train/ratio_mean",
    "train/entropy",
    "rollout/completion_len",
    "rollout/truncated_frac",
    "rollout/zero_spread_frac",
    "train/grad_norm",
    "perf/rollout_tokens_per_s",
    "perf/gen_time_s",
    "perf/update_time_s",
    "val/accuracy",
    "val/pass@2",
    "val/maj@2",
]


def warm_start_dir(cfg) -> Path:
    """Where the run's starting policy is cached (TinyPolicy's key for this task)."""
    return instantiate(cfg.model).cache_path(warm_start_key(cfg))


def parameters(path) -> dict[str, torch.Tensor]:
    return dict(AutoModelForCausalLM.from_pretrained(str(path)).named_parameters())


@pytest.fixture(scope="module")
def debug_run(base_overrides, tmp_path_factory):
    out = tmp_path_factory.mktemp("debug_run")
    cfg = compose_config(base_overrides + SIGNAL, output_dir=out)
    accuracy = run(cfg)
    return SimpleNamespace(cfg=cfg, out=out, accuracy=accuracy)


def test_debug_run_updates_the_policy(debug_run):
    scalars = read_scalars(debug_run.out / "tb")
    assert debug_run.accuracy == pytest.approx(scalars["final/accuracy"][-1][1])  # what train.py returns to a sweep
    before, after = parameters(warm_start_dir(debug_run.cfg)), parameters(debug_run.out / "export")
    assert before.keys() == after.keys()
    assert all(torch.isfinite(p).all() for p in after.values())
    changed = [name for name in before if not torch.equal(before[name], after[name])]
    assert len(changed) > len(before) // 2, changed  # the update reached most tensors, not a stray one
    scalars = read_scalars(debug_run.out / "tb")
    assert len(scalars["rollout/reward_mean"]) == 2  # two GRPO steps
    assert all(v > 0 for _, v in scalars["train/grad_norm"])
    assert all(v < 1 for _, v in scalars["rollout/zero_spread_frac"])
    assert not [name for name in scalars if "tool" in name]  # tools=none (the default): no tool statistics
    # mu = 1: the sampler's log-probs against the update's own (pi_old's), float32 on CPU: no mismatch, every step
    assert [v for _, v in scalars["rollout/mismatch/ratio_mean"]] == pytest.approx([1.0, 1.0], abs=1e-4)
    assert [v for _, v in scalars["rollout/mismatch/outside_frac"]] == [0.0, 0.0]


def test_debug_default_makes_real_updates_with_the_verifier(base_overrides, tmp_path):
    """python train.py debug=default (the verifier's rewards): both steps update the policy, and token statistics
    are logged only for steps whose update had tokens in the loss."""
    cfg = compose_config(base_overrides + ["eval.every_n_steps=100"], output_dir=tmp_path)
    run(cfg)
    before, after = parameters(warm_start_dir(cfg)), parameters(tmp_path / "export")
    assert sum(not torch.equal(before[n], after[n]) for n in before) > len(before) // 2
    scalars = read_scalars(tmp_path / "tb")
    updated = dict(scalars["rollout/groups_updated"])
    assert len(updated) == 2 and all(v >= 1 for v in updated.values()), updated  # groups with reward spread, each step
    assert {step for step, _ in scalars["train/ratio_mean"]} == {step for step, v in updated.items() if v > 0}


def test_load_policy_is_the_runs_warm_start(debug_run):
    """Scripts (mc_labels.py, bench.py) load the policy with pipeline.load_policy: the run's cached warm start, the
    task seen through the prompt format; no second warm start under another key."""
    cache = Path(debug_run.cfg.model.cache_dir)
    entries = sorted(cache.iterdir())
    task, policy, tokenizer = load_policy(debug_run.cfg)
    assert sorted(cache.iterdir()) == entries
    warm = parameters(warm_start_dir(debug_run.cfg))
    assert warm.keys() == dict(policy.named_parameters()).keys()
    assert all(torch.equal(p, warm[name]) for name, p in policy.named_parameters())
    assert isinstance(task, FormattedTask) and task.heldout_problems()
    assert tokenizer.padding_side == "left"


def test_evaluations_are_logged_at_the_updates_done(debug_run):
    """debug: an evaluation before training and after each of the 2 updates, at x = 0, 1, 2 (not two at 0)."""
    scalars = read_scalars(debug_run.out / "tb")
    assert [step for step, _ in scalars["val/accuracy"]] == [0, 1, 2]
    assert [step for step, _ in scalars["val/pass@2"]] == [0, 1, 2]


def test_k_samples_of_a_question_do_not_depend_on_its_batch(base_overrides, tmp_path):
    """Evaluation samples are seeded per (question, sample): one batch or one question at a time, same texts."""
    module, datamodule, _ = build(compose_config(base_overrides, output_dir=tmp_path))
    problems = module.task.heldout_problems()[:3]
    seeds = [[(7 * 1_000_003 + i) * 131 + j for j in range(2)] for i in range(3)]
    together = module.generate(problems, num_samples=2, row_seeds=[s for row in seeds for s in row])
    apart = [t for p, row in zip(problems, seeds) for t in module.generate([p], num_samples=2, row_seeds=row)]
    assert together == apart and len(set(together)) > 1


def test_debug_run_export_loads_with_transformers(debug_run):
    export = debug_run.out / "export"
    model = AutoModelForCausalLM.from_pretrained(str(export)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(export))
    assert tokenizer.padding_side == "left" and len(tokenizer) == model.config.vocab_size
    enc = tokenizer(["Q:7*3+12-5=", "Q:1+2="], padding=True, return_tensors="pt", add_special_tokens=False)
    assert tokenizer.batch_decode(enc.input_ids, skip_special_tokens=True) == ["Q:7*3+12-5=", "Q:1+2="]
    with torch.no_grad():
        out = model.generate(**enc, do_sample=False, max_new_tokens=4, pad_token_id=tokenizer.pad_token_id)
    assert out.shape[0] == 2 and out.shape[1] > enc.input_ids.shape[1]


def test_debug_run_tensorboard(debug_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    scalars = read_scalars(debug_run.out / "tb")
    missing = [tag for tag in REQUIRED_SCALARS if tag not in scalars]
    assert not missing, f"missing scalar tags {missing}; logged: {sorted(scalars)}"
    assert any(tag.startswith("lr-") for tag in scalars), sorted(scalars)  # LearningRateMonitor
    lr = next(v for tag, v in scalars.items() if tag.startswith("lr-"))
    assert all(value > 0 for _, value in lr)

    acc = EventAccumulator(str(debug_run.out / "tb"), size_guidance={"tensors": 0})
    acc.Reload()
    text_tags = acc.PluginTagToContent("text")
    assert any(tag.startswith("rollout/samples") for tag in text_tags), acc.Tags()["tensors"]
    table = acc.Tensors(next(t for t in text_tags if t.startswith("rollout/samples")))[0].tensor_proto.string_val[0].decode()
    assert "| prompt | completion | reward |" in table and "Q:" in table

    hparams = acc.PluginTagToContent("hparams")
    assert "_hparams_/session_start_info" in hparams
    start = plugin_data_pb2.HParamsPluginData.FromString(hparams["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["grpo.group_size"].number_value == debug_run.cfg.grpo.group_size
    assert start.hparams["grpo.aggregation"].string_value == debug_run.cfg.grpo.aggregation
    assert start.hparams["choice.kl"].string_value == "k3" and start.hparams["choice.supervision"].string_value == "outcome"
    assert {"final/accuracy", "initial/accuracy"} <= set(scalars)
    # evaluations: before training, then after each of the 2 steps (debug: every step); the last one is the
    # final figure, not evaluated a second time
    steps = debug_run.cfg.grpo.steps
    assert debug_run.cfg.eval.every_n_steps == 1 and len(scalars["val/accuracy"]) == 1 + steps
    assert scalars["final/accuracy"][-1][1] == pytest.approx(scalars["val/accuracy"][-1][1])
    assert scalars["initial/accuracy"][-1][1] == pytest.approx(scalars["val/accuracy"][0][1])


# ---- exact resume ----------------------------------------------------------------------------------
RESUME = SIGNAL + [
    "grpo.minibatch_prompts=2",  # 2 mini-batches x mu=2: 4 updates per rollout, pi_old != pi_theta, Adam state matters
    "grpo.mu=2",
    "callbacks.model_checkpoint.every_n_epochs=1",
    "callbacks.model_checkpoint.save_top_k=-1",
    "eval.every_n_steps=100",  # validation only before and after training (faster; not what is compared)
    "eval.prompts=4",
    "eval.batch_size=4",
    "eval.k_prompts=2",
    "sampling.max_new_tokens=16",
]
COMPARED = [
    "rollout/reward_mean",
    "rollout/reward_std",
    "rollout/completion_len",
    "train/loss",
    "train/kl",
    "train/ratio_mean",
    "train/clip_frac",
    "train/entropy",
    "train/grad_norm",
]


def last(scalars, tag):
    return max(scalars[tag])  # (step, value) of the latest step


@pytest.fixture(scope="module")
def resume_runs(base_overrides, tmp_path_factory):
    """3 steps uninterrupted; 2 steps; those 2 resumed from their last.ckpt up to 3."""
    root = tmp_path_factory.mktemp("resume")
    runs = SimpleNamespace(full=root / "full", part=root / "part", resumed=root / "resumed")
    run(compose_config(base_overrides + RESUME + ["grpo.steps=3"], output_dir=runs.full))
    run(compose_config(base_overrides + RESUME + ["grpo.steps=2"], output_dir=runs.part))
    runs.ckpt = runs.part / "checkpoints" / "last.ckpt"
    assert runs.ckpt.is_file()
    run(compose_config(base_overrides + RESUME + ["grpo.steps=3", f"ckpt_path={runs.ckpt}"], output_dir=runs.resumed))
    return runs


@pytest.mark.slow
def test_resume_reproduces_the_uninterrupted_run(resume_runs):
    a, b = read_scalars(resume_runs.full / "tb"), read_scalars(resume_runs.resumed / "tb")
    assert len(a["rollout/reward_mean"]) == 3
    assert len(b["rollout/reward_mean"]) == 1  # the resumed run did only the missing step
    for tag in COMPARED:
        (step_a, value_a), (step_b, value_b) = last(a, tag), last(b, tag)
        assert step_a == step_b, tag
        assert value_b == pytest.approx(value_a, rel=1e-5, abs=1e-7), tag
    # the third step really moved the policy (otherwise equality would prove little)
    assert last(a, "train/grad_norm")[1] > 0 and last(a, "train/ratio_mean")[1] != 1.0

    pa, pb = parameters(resume_runs.full / "export"), parameters(resume_runs.resumed / "export")
    pp = parameters(resume_runs.part / "export")
    for name in pa:
        torch.testing.assert_close(pb[name], pa[name], rtol=1e-6, atol=1e-7)
    assert any(not torch.equal(pp[name], pa[name]) for name in pa)


@pytest.mark.slow
def test_checkpoint_every_n_epochs_is_in_grpo_steps(resume_runs):
    saved = sorted(p.name for p in (resume_runs.full / "checkpoints").glob("epoch*-step*.ckpt"))
    assert len(saved) == 3, saved  # every_n_epochs=1, save_top_k=-1: one per GRPO step, all kept
