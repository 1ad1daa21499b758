"""reward.implicit_beta: an implicit PRM. Its score by hand (beta times the cumulative log-likelihood ratio), zero where
it starts, pi_ref frozen and never in train mode, training on step labels moves it the right way, it saves and loads,
the setting reaches the reward (and the cache key), refusals are clear, and a run retrains and checkpoints it."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from grpo.pipeline import build
from grpo.rewards.learned.data import RMExample
from grpo.rewards.learned.implicit import ImplicitPRM
from grpo.rewards.learned.network import build_reward_model, load_reward_model, score
from grpo.rewards.learned.reward import LearnedReward
from grpo.rewards.learned.training import evaluate_reward_model, train_reward_model
from grpo.tasks.arithmetic import ArithmeticTask
from grpo_testkit import compose_config, online_mc_prm_overrides, read_scalars, tiny_lm

TASK = ArithmeticTask(train_size=300, heldout_size=50)


class FixedLM(nn.Module):
    """A two-token LM whose next-token probabilities are `probs` at every position."""

    def __init__(self, probs):
        super().__init__()
        self.logits = nn.Parameter(torch.tensor(probs).log())

    def forward(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=self.logits.expand(*input_ids.shape, -1))


def test_the_score_is_beta_times_the_cumulative_log_ratio_by_hand():
    model = ImplicitPRM(FixedLM([0.5, 0.5]), FixedLM([0.8, 0.2]), beta=0.1)
    # x = [0, 1, 0]: token 1 at position 1, log(0.5 / 0.2) = 0.916291; token 0 at position 2, log(0.5 / 0.8) = -0.470004
    z = model(torch.tensor([[0, 1, 0]])).logits[0, :, 0]
    torch.testing.assert_close(z, torch.tensor([0.0, 0.0916291, 0.0916291 - 0.0470004]))
    z = model(torch.tensor([[1, 1, 1]])).logits[0, :, 0]
    torch.testing.assert_close(z, torch.tensor([0.0, 0.0916291, 0.1832582]))


def test_it_starts_at_zero_and_its_reference_stays_frozen_in_eval_mode():
    lm, tokenizer = tiny_lm(seed=1)
    model = build_reward_model(tokenizer, init_from=lm, implicit_beta=0.05)
    for a, b in zip(model.lm.parameters(), lm.parameters()):  # the policy's weights
        assert torch.equal(a, b)
    ids = torch.tensor([tokenizer("Q:1+2=1+2=3;A:3").input_ids])
    assert torch.count_nonzero(model(ids).logits) == 0  # pi_phi = pi_ref: every score 0.5
    model.train()
    assert model.lm.training and not model.reference.training
    assert all(not p.requires_grad for p in model.reference.parameters())


PROBLEM_PROMPT = "Q:7+5="
RIGHT, WRONG = "7+5=12;A:12", "7+5=13;A:13"


def test_training_on_step_labels_moves_the_ratio_the_right_way():
    lm, tokenizer = tiny_lm(seed=1)
    model = build_reward_model(tokenizer, init_from=lm, implicit_beta=0.5)
    reference = [p.clone() for p in model.reference.parameters()]
    examples = [RMExample(PROBLEM_PROMPT, RIGHT, ((5, 1.0), (10, 1.0)), True),
                RMExample(PROBLEM_PROMPT, WRONG, ((5, 0.0), (10, 0.0)), True)] * 8
    metrics = train_reward_model(model, tokenizer, examples, examples[:2], steps=30, batch_size=4, lr=1e-2, progress=False)
    assert metrics["auroc"] == 1.0
    right, wrong = score(model, tokenizer, examples[:2])
    assert min(right) > 0.5 > max(wrong)
    for a, b in zip(model.reference.parameters(), reference):
        assert torch.equal(a, b)
    assert evaluate_reward_model(model, tokenizer, examples[:2])["accuracy"] == 1.0  # every step on the right side of 0.5


def test_it_saves_and_loads_as_one_directory(tmp_path):
    lm, tokenizer = tiny_lm(seed=1)
    model = build_reward_model(tokenizer, init_from=lm, implicit_beta=0.2)
    examples = [RMExample(PROBLEM_PROMPT, RIGHT, ((5, 1.0),), True), RMExample(PROBLEM_PROMPT, WRONG, ((5, 0.0),), True)]
    train_reward_model(model, tokenizer, examples * 4, steps=3, batch_size=4, lr=1e-2, progress=False)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded, _ = load_reward_model(str(tmp_path))
    assert isinstance(loaded, ImplicitPRM) and loaded.beta == 0.2
    got, want = (sum(score(m, tokenizer, examples), []) for m in (loaded, model))
    assert got == pytest.approx(want) and not math.isclose(got[1], 0.5)


def test_the_setting_reaches_the_reward_and_changes_the_cache_key(tmp_path):
    """python train.py reward=model supervision=process reward.implicit_beta=0.05"""
    cfg = compose_config(["reward=model", "supervision=process", "reward.implicit_beta=0.05"], output_dir=tmp_path)
    assert instantiate(cfg.reward).model_kwargs["implicit_beta"] == 0.05
    assert instantiate(compose_config(["reward=model"], output_dir=tmp_path).reward).model_kwargs["implicit_beta"] is None
    lm, _ = tiny_lm(seed=1)
    paths = {LearnedReward(kind="prm", implicit_beta=b, cache_dir=str(tmp_path)).cache_path(TASK, lm) for b in (None, 0.05, 0.1)}
    assert len(paths) == 3
    for bad in (0, -1.0, True, "big"):
        with pytest.raises(ValueError, match=r"reward\.implicit_beta=.*null .* or a number > 0"):
            LearnedReward(kind="prm", implicit_beta=bad)


def test_a_run_retrains_and_checkpoints_an_implicit_prm(base_overrides, tmp_path):
    """python train.py debug=default reward=model supervision=process_min step_labels=mc reward.implicit_beta=0.1
    rm_schedule=online"""
    cfg = compose_config(base_overrides + online_mc_prm_overrides(tmp_path / "cache") + ["reward.implicit_beta=0.1"], output_dir=tmp_path / "run")
    module, datamodule, trainer = build(cfg)
    reward = module.rollout.reward
    assert isinstance(reward.model, ImplicitPRM) and reward.model.beta == 0.1
    (cached,) = (p.parent for p in (tmp_path / "cache").glob("reward-prm-*/examples.json"))
    assert (cached / "reference").is_dir()
    before = [p.clone() for p in reward.model.lm.parameters()]
    reference = [p.clone() for p in reward.model.reference.parameters()]
    trainer.fit(module, datamodule=datamodule)
    assert len(read_scalars(tmp_path / "run" / "tb")["rm/accuracy_after"]) == 2
    assert any(not torch.equal(a, b) for a, b in zip(reward.model.lm.parameters(), before))
    assert all(torch.equal(a, b) for a, b in zip(reward.model.reference.parameters(), reference))
    (ckpt,) = (tmp_path / "run").rglob("last.ckpt")
    state = torch.load(ckpt, weights_only=False)["reward_state"]["reward_model"]
    for k, v in reward.model.state_dict().items():
        assert torch.equal(state[k], v.cpu())


def test_a_transformers_model_by_path_starts_it_and_a_bad_path_is_refused(saved_tiny_model, tmp_path):
    """reward.implicit_beta=0.1 reward.name_or_path=<directory or hub id>: that causal LM, and its frozen copy."""
    from transformers import AutoModelForCausalLM

    saved = AutoModelForCausalLM.from_pretrained(saved_tiny_model)
    model = build_reward_model(None, name_or_path=str(saved_tiny_model), implicit_beta=0.1)
    assert isinstance(model, ImplicitPRM)
    for a, b, c in zip(model.lm.parameters(), model.reference.parameters(), saved.parameters()):
        assert torch.equal(a, c) and torch.equal(b, c)
    with pytest.raises(ValueError, match=r"implicit PRM's language model from reward\.name_or_path=.*neither a local directory"):
        build_reward_model(None, name_or_path=str(tmp_path / "nothing"), implicit_beta=0.1)
