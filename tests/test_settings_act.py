"""Every value a run records acts: loss=cispo reads grpo.epsilon / epsilon_high / aggregation / ratio_level (or refuses
what it cannot do), supervision=rloo reads grpo.scale_rewards / adv_eps, warmstart.* drives the warm start of both
model options. (skip_zero_spread under dynamic sampling: tests/rollout/test_length_and_dynamic_sampling.py.)"""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from grpo.pipeline import build, instantiate_clearly
from grpo_testkit import compose_config


def test_cispo_takes_the_grpo_settings_with_the_paper_s_defaults(tmp_path):
    loss = instantiate(compose_config(["loss=cispo"], output_dir=tmp_path).loss)
    assert (loss.epsilon, loss.epsilon_high, loss.aggregation) == (None, 0.28, "token")  # conf/loss/cispo.yaml
    cfg = compose_config(["loss=cispo", "grpo.epsilon=0.1", "grpo.epsilon_high=0.3", "grpo.aggregation=sequence"], output_dir=tmp_path)
    loss = instantiate(cfg.loss)
    assert (loss.epsilon, loss.epsilon_high, loss.aggregation) == (0.1, 0.3, "sequence")
    # the values act: rho = 0.5 with A = -1 is weighed 1 - epsilon = 0.9, so d loss / d logp = +0.9 (one token)
    logp = torch.tensor([[0.5]]).log().requires_grad_()
    out, _ = loss(logp, torch.zeros(1, 1), None if loss.beta == 0 else logp.detach(), torch.tensor([-1.0]), torch.ones(1, 1, dtype=torch.bool))
    torch.testing.assert_close(torch.autograd.grad(out, logp)[0], torch.tensor([[0.9]]))
    assert loss.beta == cfg.grpo.beta


def test_cispo_refuses_sequence_level_ratios_before_loading_anything(tmp_path):
    cache = tmp_path / "cache"
    cfg = compose_config(["debug=default", "loss=cispo", "grpo.ratio_level=sequence", f"model.cache_dir={cache}"], output_dir=tmp_path / "run")
    with pytest.raises(ValueError, match=r"grpo\.ratio_level='sequence': loss=cispo .* use grpo\.ratio_level=token"):
        build(cfg)
    assert not cache.exists()


def test_grpo_loss_refuses_no_lower_clip(tmp_path):
    with pytest.raises(ValueError, match=r"grpo\.epsilon=null: loss=grpo .* e\.g\. grpo\.epsilon=0\.2"):
        instantiate_clearly(compose_config(["grpo.epsilon=null"], output_dir=tmp_path).loss)


def test_rloo_takes_scale_rewards_and_adv_eps(tmp_path):
    assert instantiate(compose_config(["supervision=rloo"], output_dir=tmp_path).advantage).scale is False  # RLOO's default
    estimator = instantiate(compose_config(["supervision=rloo", "grpo.scale_rewards=true", "grpo.adv_eps=0.5"], output_dir=tmp_path).advantage)
    # rewards [1, 0, 0, 1]: leave-one-out A = +-2/3, divided by (group std 0.577350 + 0.5): +-0.618802 (tests/algo/test_rloo.py)
    torch.testing.assert_close(estimator(torch.tensor([1.0, 0.0, 0.0, 1.0]), 4), torch.tensor([0.618802, -0.618802, -0.618802, 0.618802]))


@pytest.mark.parametrize("model, want", [(["model=tiny"], dict(steps=2000, batch_size=64, lr=2e-3)),
                                         (["model=hf", "model.name_or_path=x"], dict(steps=0, batch_size=16, lr=1e-5))])
def test_warmstart_settings_and_each_model_option_s_defaults(tmp_path, model, want):
    source = instantiate(compose_config(model, output_dir=tmp_path).model)
    assert source.warmstart == dict(want, seed=0)
    source = instantiate(compose_config(model + ["warmstart.steps=3", "warmstart.batch_size=4", "warmstart.lr=0.01"], output_dir=tmp_path).model)
    assert source.warmstart == dict(steps=3, batch_size=4, lr=0.01, seed=0)


def test_warmstart_steps_warm_starts_a_model_hf_policy(tmp_path, saved_tiny_model):
    cache = tmp_path / "cache"
    cfg = compose_config(["model=hf", f"model.name_or_path={saved_tiny_model}", f"model.cache_dir={cache}", "warmstart.steps=2",
                          "warmstart.batch_size=4", "grpo.steps=1"], output_dir=tmp_path / "run")
    module, _, _ = build(cfg)
    (built,) = [p for p in cache.glob("warmstart-hf-*") if p.is_dir()]  # trained and cached, then loaded
    from transformers import AutoModelForCausalLM

    start = AutoModelForCausalLM.from_pretrained(str(saved_tiny_model)).state_dict()
    assert any(not torch.equal(start[k], v) for k, v in module.policy.state_dict().items())  # the warm start moved the weights


def test_old_logp_from_and_rollout_correction_reach_the_rollout(tmp_path):
    """grpo.old_logp_from=sampler: the engine's log-probs are pi_old (no old-policy pass); rollout_correction=tis takes
    grpo.rollout_is_cap (its acting on a mismatch: tests/rollout/test_sampler_logp.py)."""
    from grpo.pipeline import instantiate_clearly
    from grpo.tasks import ArithmeticTask
    from grpo_testkit import tiny_lm

    model, tok = tiny_lm(seed=1)
    task = ArithmeticTask(train_size=10, heldout_size=2, seed=4)
    cfg = compose_config(["grpo.old_logp_from=sampler", "grpo.group_size=2", "sampling.max_new_tokens=4"], output_dir=tmp_path)
    rollout = instantiate_clearly(cfg.rollout, reward=lambda problems, completions: [0.0] * len(completions), task=task, tokenizer=tok)
    out = rollout(model, None, task.train_problems()[:2], torch.Generator().manual_seed(0))
    assert out.batch.old_logp is out.batch.sampler_logp is not None
    cfg = compose_config(["rollout_correction=tis", "grpo.rollout_is_cap=3"], output_dir=tmp_path)
    assert instantiate_clearly(cfg.rollout, task=task, tokenizer=tok).correction.cap == 3.0


def test_eos_credit_reaches_the_rollout(tmp_path):
    """grpo.eos_credit (default true) is the rollout's; what it does to the EOS token's advantage:
    tests/rollout/test_group.py::test_eos_credit_puts_the_final_steps_reward_on_the_eos_token_or_leaves_it_at_its_last_character."""
    from grpo.tasks import ArithmeticTask
    from grpo_testkit import tiny_lm

    _, tok = tiny_lm(seed=1)
    task = ArithmeticTask(train_size=10, heldout_size=2, seed=4)
    for overrides, want in (([], True), (["grpo.eos_credit=false"], False)):
        cfg = compose_config(["supervision=process", *overrides], output_dir=tmp_path)
        assert instantiate_clearly(cfg.rollout, task=task, tokenizer=tok).eos_credit is want


def test_eos_credit_off_is_refused_where_it_would_do_nothing(tmp_path):
    from grpo.tasks import ArithmeticTask
    from grpo_testkit import tiny_lm

    _, tok = tiny_lm(seed=1)
    cfg = compose_config(["grpo.eos_credit=false"], output_dir=tmp_path)  # supervision=outcome
    with pytest.raises(ValueError, match=r"grpo\.eos_credit=false .* OutcomeAdvantages .* supervision=process"):
        instantiate_clearly(cfg.rollout, task=ArithmeticTask(train_size=10, heldout_size=2, seed=4), tokenizer=tok)
