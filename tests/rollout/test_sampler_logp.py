"""Sampler log-probs through the rollout: the engine's log-probs match the trainer's in float32 (the logged mismatch is
~0), old_logp_from=sampler makes them pi_old without a forward pass, and rollout_correction=tis / mis act on a mismatch
made by hand (an engine whose log-probs are off by log 3 on every completion's first token)."""

from __future__ import annotations

import math

import pytest
import torch
from hydra.utils import instantiate

from grpo.algo.advantages import OutcomeAdvantages
from grpo.algo.rollout_correction import MaskedIS, TruncatedIS
from grpo.pipeline import instantiate_clearly
from grpo.rollout import group as group_module
from grpo.rollout.engine import KVCacheEngine
from grpo.rollout.group import GroupRollout
from grpo.rollout.logprobs import completion_logprobs
from grpo.tasks import ArithmeticTask
from grpo_testkit import compose_config, tiny_lm

G = 4


class DigitReward:
    """Outcome reward: the share of digits in the completion (spread inside almost every group)."""

    def outcome(self, problems, completions):
        return [sum(c.isdigit() for c in t) / max(len(t), 1) for t in completions]


class OffByLog3(KVCacheEngine):
    """The built-in engine, but its log-prob of each completion's first token is log 3 too low: ratio
    pi_trainer / pi_sampler = 3 there (a mismatch as bf16 kernels make, only larger and known)."""

    def generate(self, *args, **kwargs):
        out = super().generate(*args, **kwargs)
        out.logp[:, 0] -= math.log(3.0)
        return out


@pytest.fixture(scope="module")
def lm():
    return tiny_lm(seed=1)


TASK = ArithmeticTask(train_size=30, heldout_size=5, seed=4)


@pytest.fixture(scope="module")
def problems():
    return TASK.train_problems()[:3]


def run(lm, problems, engine=None, need_old_logp=True, **kwargs):
    model, tok = lm
    rollout = GroupRollout(engine or KVCacheEngine(max_new_tokens=10, temperature=0.7), OutcomeAdvantages(), group_size=G,
                           reward=DigitReward(), task=TASK, tokenizer=tok, skip_zero_spread=False, **kwargs)
    return rollout(model, None, problems, torch.Generator().manual_seed(0), need_old_logp=need_old_logp)


def test_sampler_logp_is_the_trainer_s_in_float32(lm, problems):
    """top_p < 1 on purpose: the sampler's log-probs are the temperature-scaled full softmax, as the trainer's."""
    out = run(lm, problems, KVCacheEngine(max_new_tokens=10, temperature=0.7, top_p=0.8))
    b = out.batch
    T = b.completion_mask.shape[1]
    trainer, _ = completion_logprobs(lm[0], b.input_ids, b.attention_mask, T, 0.7)
    real = b.attention_mask[:, -T:].bool()
    torch.testing.assert_close(b.sampler_logp[real], trainer[real], atol=1e-5, rtol=0)
    assert (b.sampler_logp[~real] == 0).all()
    assert out.stats["mismatch/ratio_mean"] == pytest.approx(1.0, abs=1e-5)  # logged mismatch ~0 on CPU in float32
    assert out.stats["mismatch/outside_frac"] == 0.0
    assert "mismatch/ratio_mean" not in run(lm, problems, need_old_logp=False).stats  # no trainer pi_old: nothing to compare


def test_old_logp_from_sampler_skips_the_old_policy_forward(lm, problems, monkeypatch):
    calls = []
    real_batched = group_module.batched_logprobs
    monkeypatch.setattr(group_module, "batched_logprobs", lambda *a, **k: calls.append(1) or real_batched(*a, **k))
    for need_old_logp in (True, False):  # mu > 1, and the single update of mu = 1 (bypass mode)
        out = run(lm, problems, need_old_logp=need_old_logp, old_logp_from="sampler")
        assert out.batch.old_logp is out.batch.sampler_logp
    assert calls == []  # no forward pass for pi_old (no reference either)
    run(lm, problems, old_logp_from="trainer")
    assert calls == [1]
    with pytest.raises(ValueError, match=r"grpo\.old_logp_from='engine': choose one of"):
        run(lm, problems, old_logp_from="engine")
    with pytest.raises(ValueError, match=r"old_logp_from=sampler .* rollout_correction=none"):
        run(lm, problems, old_logp_from="sampler", correction=TruncatedIS(2.0))


def test_tis_and_mis_act_on_a_known_mismatch(lm, problems):
    engine = lambda: OffByLog3(max_new_tokens=10, temperature=0.7)
    plain = run(lm, problems, engine())
    first = plain.batch.attention_mask[:, -plain.batch.completion_mask.shape[1]:].bool()[:, 0]  # rows with a first token
    # mismatch: ratio 3 on each first token, 1 elsewhere
    assert plain.stats["mismatch/outside_frac"] > 0 and plain.stats["mismatch/ratio_mean"] > 1.01
    # TIS, cap 2: the first token's advantage doubles (min(3, 2)); the others keep theirs; needs pi_old even for mu = 1
    tis = run(lm, problems, engine(), need_old_logp=False, correction=TruncatedIS(2.0))
    adv = tis.batch.advantages
    assert adv.shape == tis.batch.completion_mask.shape and tis.batch.old_logp is not None
    torch.testing.assert_close(adv[first, 0], 2 * plain.batch.advantages[first], atol=1e-4, rtol=1e-4)
    real = tis.batch.completion_mask.clone()
    real[:, 0] = False
    torch.testing.assert_close(adv[real], plain.batch.advantages[:, None].expand_as(adv)[real], atol=1e-4, rtol=1e-4)
    # MIS, cap 2: band [0.5, 2] drops every first token, keeps the rest
    mis = run(lm, problems, engine(), correction=MaskedIS(2.0))
    assert not mis.batch.completion_mask[:, 0].any()
    assert mis.batch.completion_mask[:, 1:].equal(plain.batch.completion_mask[:, 1:])
    assert mis.stats["mismatch/is_masked_frac"] == pytest.approx(first.sum().item() / plain.batch.completion_mask.sum().item())


def test_the_settings_reach_the_rollout(tmp_path, lm, problems):
    cfg = compose_config(["rollout_correction=mis", "grpo.rollout_is_cap=4", "grpo.old_logp_from=trainer"], output_dir=tmp_path)
    rollout = instantiate(cfg.rollout, reward=DigitReward(), task=TASK, tokenizer=lm[1])
    assert isinstance(rollout.correction, MaskedIS) and rollout.correction.cap == 4.0 and rollout.old_logp_from == "trainer"
    rollout.engine = OffByLog3(max_new_tokens=10, temperature=0.7)
    out = rollout(lm[0], None, problems, torch.Generator().manual_seed(0))
    assert out.batch.completion_mask[:, 0].any()  # ratio 3 lies inside [1/4, 4]: cap 4 acted
    cfg = compose_config(["rollout_correction=tis", "grpo.rollout_is_cap=1.5", "grpo.old_logp_from=sampler"], output_dir=tmp_path)
    with pytest.raises(ValueError, match=r"old_logp_from=sampler"):
        instantiate_clearly(cfg.rollout, reward=DigitReward(), task=TASK, tokenizer=lm[1])
    assert instantiate(cfg.rollout_correction).cap == 1.5


def test_a_bypass_run_logs_the_mismatch_at_its_first_update(base_overrides, tmp_path):
    """grpo.old_logp_from=sampler, mu = 2 with 2 mini-batches: no trainer pi_old pass, so the mismatch is measured at the
    step's first update (its mini-batch's rows), float32 on CPU: ~0."""
    from grpo.pipeline import run as run_training
    from grpo_testkit import read_scalars

    cfg = compose_config(base_overrides + ["grpo.old_logp_from=sampler", "grpo.mu=2", "grpo.minibatch_prompts=2",
                                           "eval.every_n_steps=100"], output_dir=tmp_path)
    run_training(cfg)
    scalars = read_scalars(tmp_path / "tb")
    assert [v for _, v in scalars["rollout/mismatch/ratio_mean"]] == pytest.approx([1.0, 1.0], abs=1e-4)
    assert [v for _, v in scalars["rollout/mismatch/outside_frac"]] == [0.0, 0.0]
