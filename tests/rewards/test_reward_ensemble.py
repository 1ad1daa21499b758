"""reward.ensemble: K reward models read as one. The aggregates by hand, member k is exactly what reward.seed + k
builds alone (shared cache), the scores are the aggregate of the members' scores, retraining trains each member
on its own, the settings refuse what cannot work, and a run with an ensemble PRM retrains and checkpoints it."""

from __future__ import annotations

import math

import pytest
import torch
from hydra.utils import instantiate

from grpo.pipeline import build
from grpo.rewards.learned import reward as reward_mod
from grpo.rewards.learned.data import RMExample
from grpo.rewards.learned.ensemble import RewardEnsemble, aggregate_logits, ensemble_settings
from grpo.rewards.learned.network import score
from grpo.rewards.learned.reward import LearnedReward
from grpo.tasks.arithmetic import ArithmeticTask
from grpo.tasks.base import Problem
from grpo_testkit import compose_config, online_mc_prm_overrides, read_scalars, tiny_lm

TASK = ArithmeticTask(train_size=300, heldout_size=50)
PROBLEM = Problem("Q:12+5-3=", "14", "12+5=17;17-3=14;A:14")
TEXTS = ["12+5=18;18-3=15;A:15", "12+5=17;17-3=14;A:14", "12+5=17;"]


# ---- the aggregates, by hand: three members' logits at two positions
LOGITS = torch.tensor([[1.0, -2.0], [3.0, 0.0], [-1.0, 1.0]])


def test_mean_and_min_by_hand():
    torch.testing.assert_close(aggregate_logits(LOGITS, "mean"), torch.tensor([1.0, -1.0 / 3.0]))
    torch.testing.assert_close(aggregate_logits(LOGITS, "min"), torch.tensor([-1.0, -2.0]))


def test_lcb_is_the_mean_less_the_members_std_by_hand():
    # position 0: mean 1, deviations 0, 2, -2 -> std sqrt(8/3) = 1.632993; position 1: mean -1/3, deviations
    # -5/3, 1/3, 4/3 -> std sqrt(42/27) = 1.247219 (no Bessel correction)
    torch.testing.assert_close(aggregate_logits(LOGITS, "lcb", 1.0), torch.tensor([1.0 - 1.632993, -1.0 / 3.0 - 1.247219]))
    torch.testing.assert_close(aggregate_logits(LOGITS, "lcb", 0.5), torch.tensor([1.0 - 0.816497, -1.0 / 3.0 - 0.623610]))
    torch.testing.assert_close(aggregate_logits(LOGITS, "lcb", 0.0), aggregate_logits(LOGITS, "mean"))


@pytest.mark.parametrize("how, weight", [("mean", None), ("min", None), ("lcb", 2.0)])
def test_one_member_is_that_member(how, weight):
    torch.testing.assert_close(aggregate_logits(LOGITS[1:2], how, weight), LOGITS[1])


# ---- the settings
def test_settings_defaults_and_refusals():
    assert ensemble_settings(None) == {"size": 1, "aggregate": "mean", "std_weight": None}
    assert ensemble_settings({"size": 3, "aggregate": "lcb", "std_weight": 1}) == {"size": 3, "aggregate": "lcb", "std_weight": 1.0}
    for bad, message in [({"size": 0}, r"reward\.ensemble\.size=0"), ({"size": True}, r"reward\.ensemble\.size=True"),
                         ({"aggregate": "max"}, r"reward\.ensemble\.aggregate='max' is not known; choose one of mean, min, lcb"),
                         ({"aggregate": "lcb"}, r"set reward\.ensemble\.std_weight"),
                         ({"aggregate": "lcb", "std_weight": -1}, r"std_weight.*>= 0"),
                         ({"aggregate": "min", "std_weight": 1.0}, r"read by aggregate=lcb only.*would do nothing"),
                         ({"members": 3}, r"reward\.ensemble has no setting \['members'\]"),
                         (3, r"reward\.ensemble=3: .* e\.g\. reward\.ensemble\.size=3")]:
        with pytest.raises(ValueError, match=message):
            ensemble_settings(bad)
        with pytest.raises(ValueError, match=message):
            LearnedReward(kind="prm", ensemble=bad)


def test_the_config_reaches_the_reward_and_the_weighted_component(tmp_path):
    """python train.py reward=model reward.ensemble.size=3 reward.ensemble.aggregate=lcb reward.ensemble.std_weight=0.5"""
    cfg = compose_config(["reward=model", "reward.ensemble.size=3", "reward.ensemble.aggregate=lcb", "reward.ensemble.std_weight=0.5"],
                         output_dir=tmp_path)
    assert instantiate(cfg.reward).ensemble == {"size": 3, "aggregate": "lcb", "std_weight": 0.5}
    assert instantiate(compose_config(["reward=model"], output_dir=tmp_path).reward).ensemble["size"] == 1
    cfg = compose_config(["reward=prm_verifier", "reward.components.model.fn.ensemble.size=2",
                          "reward.components.model.fn.ensemble.aggregate=min"], output_dir=tmp_path)
    fn = instantiate(cfg.reward).components["model"].fn
    assert fn.ensemble == {"size": 2, "aggregate": "min", "std_weight": None}


# ---- a bound ensemble: built, cached, scored, retrained
def make(tmp_path, seed: int = 0, **ensemble) -> LearnedReward:
    return LearnedReward(kind="prm", initial_prompts=16, samples_per_prompt=2, max_new_tokens=16, heldout_fraction=0.5,
                         initial_steps=3, batch_size=4, seed=seed, cache_dir=str(tmp_path / "cache"), ensemble=ensemble or None)


@pytest.fixture(scope="module")
def policy():
    return tiny_lm(seed=1)


@pytest.fixture
def pair(tmp_path, policy):
    model, tokenizer = policy
    return make(tmp_path, size=2, aggregate="min").bind(TASK, policy=model, tokenizer=tokenizer)


def test_member_k_is_what_seed_plus_k_builds_alone_and_is_cached(pair, tmp_path, policy, monkeypatch):
    model, tokenizer = policy
    assert isinstance(pair.model, RewardEnsemble) and len(pair.members) == 2
    assert len(list((tmp_path / "cache").glob("reward-prm-*/examples.json"))) == 2
    monkeypatch.setattr(reward_mod, "train_reward_model", lambda *a, **k: pytest.fail("the cached members should load"))
    alone = [make(tmp_path, seed=s).bind(TASK, policy=model, tokenizer=tokenizer) for s in (0, 1)]
    for member, single in zip(pair.members, alone):
        assert not isinstance(single.model, RewardEnsemble)
        for a, b in zip(member.parameters(), single.model.parameters()):
            assert torch.equal(a, b)
    assert any(not torch.equal(a, b) for a, b in zip(*(m.parameters() for m in pair.members)))  # two models, not one
    # the replay history starts from every member's training set; the initial metrics are the members' mean
    assert len(pair.initial_examples) == sum(len(s.initial_examples) for s in alone)
    for key in ("accuracy", "positive_rate"):
        assert pair.initial_metrics[key] == pytest.approx(sum(s.initial_metrics[key] for s in alone) / 2)


def test_scores_are_the_aggregate_of_the_members_scores(pair):
    problems = [PROBLEM] * len(TEXTS)
    rows = pair.steps(problems, TEXTS, ended=[True, True, False])
    examples = [RMExample(PROBLEM.prompt, t, tuple((c, 0.0) for c, _ in row), e) for t, row, e in zip(TEXTS, rows, [True, True, False])]
    each = [score(m, pair.tokenizer, examples) for m in pair.members]
    for i, row in enumerate(rows[:2]):  # (the third is a cut tail: its last step is 0 whatever the models say)
        for j, (_, got) in enumerate(row):
            want = min(each[0][i][j], each[1][i][j])  # min of logits = min of sigmoids (monotone)
            penalty = pair._penalty(TEXTS[i]) if j == len(row) - 1 else 0.0
            assert got == pytest.approx(want - penalty, abs=1e-6)
    pair.model.aggregate = "mean"
    (row,) = pair.steps([PROBLEM], TEXTS[1:2], ended=[True])
    logit = lambda p: math.log(p / (1 - p))
    want = 1 / (1 + math.exp(-(logit(each[0][1][0]) + logit(each[1][1][0])) / 2))
    assert row[0][1] == pytest.approx(want, abs=1e-5)


def test_retraining_trains_each_member_on_its_own(pair, tmp_path, policy):
    model, tokenizer = policy
    single = make(tmp_path, seed=0).bind(TASK, policy=model, tokenizer=tokenizer)  # member 0 alone, from the cache
    examples = pair.initial_examples[:8]
    before = [[p.clone() for p in m.parameters()] for m in pair.members]
    pair.retrain(examples, steps=2, batch_size=4, lr=1e-2, seed=5, progress=False)
    single.retrain(examples, steps=2, batch_size=4, lr=1e-2, seed=5, progress=False)
    for a, b in zip(pair.members[0].parameters(), single.model.parameters()):  # member 0: as if trained alone
        assert torch.equal(a, b)
    for member, old in zip(pair.members, before):
        assert any(not torch.equal(a, b) for a, b in zip(member.parameters(), old))
    state = pair.state_dict()
    again = make(tmp_path, size=2, aggregate="min").bind(TASK, policy=model, tokenizer=tokenizer)
    again.load_state_dict(state)
    for a, b in zip(again.model.parameters(), pair.model.parameters()):
        assert torch.equal(a, b)


def test_each_member_records_what_its_own_monte_carlo_labels_cost(tmp_path, policy):
    """Members built in one process share the labeller (its running cost): each examples.json keeps its own share."""
    import json

    from grpo.rewards.learned.mc_labels import MonteCarloStepLabels
    from grpo.rollout.segmenters import MarkerSteps

    model, tokenizer = policy
    reward = LearnedReward(kind="prm", initial_prompts=16, samples_per_prompt=2, max_new_tokens=16, heldout_fraction=0.5,
                           initial_steps=2, batch_size=4, cache_dir=str(tmp_path / "cache"), ensemble={"size": 2},
                           step_labels=MonteCarloStepLabels(MarkerSteps(), n=2, max_new_tokens=8, cache=False))
    reward.bind(TASK, policy=model, tokenizer=tokenizer)
    saved = [json.loads(reward.cache_path(TASK, model, seed).joinpath("examples.json").read_text()) for seed in (0, 1)]
    for member in saved:  # one example per labelled solution
        assert member["label_cost"]["solutions"] == len(member["train"]) + len(member["heldout"]) > 0
    assert sum(m["label_cost"]["solutions"] for m in saved) == reward.step_labels.cost.solutions


def test_a_run_retrains_and_checkpoints_an_ensemble_prm(base_overrides, tmp_path):
    """python train.py debug=default reward=model supervision=process_min step_labels=mc reward.ensemble.size=2
    reward.ensemble.aggregate=min rm_schedule=online"""
    cfg = compose_config(base_overrides + online_mc_prm_overrides(tmp_path / "cache") + ["reward.ensemble.size=2", "reward.ensemble.aggregate=min"], output_dir=tmp_path / "run")
    module, datamodule, trainer = build(cfg)
    reward = module.rollout.reward
    before = [[p.clone() for p in m.parameters()] for m in reward.members]
    trainer.fit(module, datamodule=datamodule)
    scalars = read_scalars(tmp_path / "run" / "tb")
    assert len(scalars["rm/accuracy_after"]) == 2
    for member, old in zip(reward.members, before):
        assert any(not torch.equal(a, b) for a, b in zip(member.parameters(), old))
    (ckpt,) = (tmp_path / "run").rglob("last.ckpt")
    state = torch.load(ckpt, weights_only=False)["reward_state"]["reward_model"]
    assert {k.split(".")[1] for k in state} == {"0", "1"}  # members.0.*, members.1.*
    for k, v in reward.model.state_dict().items():
        assert torch.equal(state[k], v.cpu())
