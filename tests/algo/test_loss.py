"""grpo.algo.loss.grpo_loss: hand-worked values, gradients, clipping, aggregation, masking."""

import math

import pytest
import torch

from grpo.algo.advantages import outcome_advantages
from grpo.algo.loss import grpo_loss

STAT_KEYS = {"kl", "kl_k1", "kl_k2", "kl_k3", "clip_frac_low", "clip_frac_high", "clip_frac", "ratio_mean",
             "pg_loss", "objective"}


def _random_batch(seed, n=4, t=5, lengths=(5, 3, 1, 4)):
    g = torch.Generator().manual_seed(seed)
    logp = (-torch.rand(n, t, generator=g) * 3).requires_grad_()
    old_logp = logp.detach() + 0.3 * torch.randn(n, t, generator=g)
    ref_logp = logp.detach() + 0.3 * torch.randn(n, t, generator=g)
    advantages = outcome_advantages(torch.rand(n, generator=g), group_size=2)
    mask = torch.arange(t)[None, :] < torch.tensor(lengths)[:, None]  # [N, T] right-padded
    return logp, old_logp, ref_logp, advantages, mask


# ----------------------------------------------------------------------------- on-policy gradient


@pytest.mark.parametrize("process", [False, True])
def test_on_policy_gradient_is_reinforce_with_baseline(process):
    logp, _, _, advantages, mask = _random_batch(0)
    if process:  # token-level advantages [N, T]
        advantages = torch.randn(mask.shape, generator=torch.Generator().manual_seed(1))
    adv_tok = advantages if process else advantages[:, None].expand(mask.shape)
    lengths = mask.sum(1)
    # REINFORCE with the group baseline: -(1/N) sum_i (1/|o_i|) sum_t A_it logp_it
    reinforce = -((adv_tok * logp * mask).sum(1) / lengths).mean()
    (expected_grad,) = torch.autograd.grad(reinforce, logp)

    loss, stats = grpo_loss(logp, logp.detach(), None, advantages, mask, beta=0.0)
    (grad,) = torch.autograd.grad(loss, logp)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-6, atol=1e-7)
    # rho = 1, so the loss value is -mean_i(mean_t A_it): not the REINFORCE surrogate's value
    torch.testing.assert_close(loss, -((adv_tok * mask).sum(1) / lengths).mean())
    assert stats["ratio_mean"] == 1.0 and stats["clip_frac"] == 0.0

    loss_none, _ = grpo_loss(logp, None, None, advantages, mask, beta=0.0)
    (grad_none,) = torch.autograd.grad(loss_none, logp)
    assert torch.equal(loss_none, loss) and torch.equal(grad_none, grad)


# ----------------------------------------------------------------------------- clipping


def _one_row(rho, adv):
    """logp, old_logp, advantages [1, T] with exp(logp - old_logp) = rho; all tokens real."""
    old_logp = torch.full((1, len(rho)), -1.0)
    logp = (old_logp + torch.tensor([rho]).log()).requires_grad_()
    return logp, old_logp, torch.tensor([adv]), torch.ones(1, len(rho), dtype=torch.bool)


def test_clip_symmetric():
    # eps = 0.2, clip range [0.8, 1.2]; per token min(rho A, clip(rho) A), d/dlogp (rho A) = rho A:
    #   rho 1.5, A +1: min(1.5, 1.2)   =  1.2  clipped high, grad 0
    #   rho 0.5, A -1: min(-0.5, -0.8) = -0.8  clipped low,  grad 0
    #   rho 0.5, A +1: min(0.5, 0.8)   =  0.5  unclipped,    grad 0.5
    #   rho 1.5, A -1: min(-1.5, -1.2) = -1.5  unclipped,    grad -1.5
    # token mean = (1.2 - 0.8 + 0.5 - 1.5) / 4 = -0.15 -> loss = 0.15; grad of loss = -[0, 0, 0.5, -1.5] / 4
    logp, old_logp, adv, mask = _one_row([1.5, 0.5, 0.5, 1.5], [1.0, -1.0, 1.0, -1.0])
    loss, stats = grpo_loss(logp, old_logp, None, adv, mask, epsilon=0.2, beta=0.0)
    loss.backward()
    torch.testing.assert_close(loss, torch.tensor(0.15))
    torch.testing.assert_close(logp.grad, torch.tensor([[0.0, 0.0, -0.125, 0.375]]))
    assert stats["clip_frac_low"] == 0.25 and stats["clip_frac_high"] == 0.25 and stats["clip_frac"] == 0.5
    torch.testing.assert_close(stats["ratio_mean"], torch.tensor(1.0))
    torch.testing.assert_close(stats["pg_loss"], torch.tensor(0.15))
    torch.testing.assert_close(stats["objective"], torch.tensor(-0.15))


def test_clip_asymmetric_epsilon_high():
    # eps = 0.2, eps_high = 0.28: clip range [0.8, 1.28]
    #   rho 1.5,  A +1: min(1.5, 1.28)    =  1.28  clipped high, grad 0
    #   rho 1.2,  A +1: min(1.2, 1.2)     =  1.2   unclipped (would be clipped at eps_high 0.2), grad 1.2
    #   rho 0.75, A -1: min(-0.75, -0.8)  = -0.8   clipped low: the low side still uses eps, grad 0
    # mean = (1.28 + 1.2 - 0.8) / 3 = 0.56 -> loss = -0.56; grad of loss = -[0, 1.2, 0] / 3
    logp, old_logp, adv, mask = _one_row([1.5, 1.2, 0.75], [1.0, 1.0, -1.0])
    loss, stats = grpo_loss(logp, old_logp, None, adv, mask, epsilon=0.2, epsilon_high=0.28, beta=0.0)
    loss.backward()
    torch.testing.assert_close(loss, torch.tensor(-0.56))
    torch.testing.assert_close(logp.grad, torch.tensor([[0.0, -0.4, 0.0]]))
    torch.testing.assert_close(stats["clip_frac_low"], torch.tensor(1 / 3))
    torch.testing.assert_close(stats["clip_frac_high"], torch.tensor(1 / 3))


# ----------------------------------------------------------------------------- aggregation


@pytest.mark.parametrize(
    "aggregation, expected_loss",
    [
        # on-policy, beta 0: each token contributes A_it. Rows: [1, 2, 3], [4, pad, pad], [all pad]
        ("sequence", -3.0),  # row means 2 and 4 (the empty row is left out) -> (2 + 4) / 2 = 3
        ("token", -2.5),  # (1 + 2 + 3 + 4) / 4 tokens = 2.5
        ("constant", -10.0 / 9.0),  # (1 + 2 + 3 + 4) / (N x T = 3 x 3)
    ],
)
def test_aggregation_hand_worked(aggregation, expected_loss):
    logp = torch.full((3, 3), -1.0, requires_grad=True)
    advantages = torch.tensor([[1.0, 2.0, 3.0], [4.0, 99.0, 99.0], [5.0, 5.0, 5.0]])  # [N, T]
    mask = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 0, 0]], dtype=torch.bool)
    loss, stats = grpo_loss(logp, None, None, advantages, mask, beta=0.0, aggregation=aggregation)
    torch.testing.assert_close(loss, torch.tensor(expected_loss))
    torch.testing.assert_close(stats["pg_loss"], torch.tensor(expected_loss))


def test_float_mask_equals_bool_mask():
    logp, old_logp, ref_logp, advantages, mask = _random_batch(2)
    loss_bool, _ = grpo_loss(logp, old_logp, ref_logp, advantages, mask)
    loss_float, _ = grpo_loss(logp, old_logp, ref_logp, advantages, mask.float())
    assert torch.equal(loss_bool, loss_float)


# ----------------------------------------------------------------------------- KL term


@pytest.mark.parametrize(
    "estimator, expected_kl",
    [
        # tokens (pi_theta, pi_ref) = (0.5, 0.25), (0.25, 0.5) -- worked out in test_kl.test_hand_worked
        ("k3", 0.25),  # ((log 2 - 0.5) + (1 - log 2)) / 2 = 0.25
        ("k2", 0.5 * math.log(2) ** 2),  # both tokens 0.5 (log 2)^2 = 0.240227
        ("k1", 0.0),  # (log 2 - log 2) / 2
    ],
)
def test_kl_term_with_zero_advantage(estimator, expected_kl):
    logp = torch.tensor([[math.log(0.5), math.log(0.25)]], requires_grad=True)
    ref_logp = torch.tensor([[math.log(0.25), math.log(0.5)]])
    mask = torch.ones(1, 2, dtype=torch.bool)
    loss, stats = grpo_loss(logp, None, ref_logp, torch.zeros(1), mask, beta=0.04, kl_estimator=estimator)
    # A = 0: loss = -(0 - beta * mean KL) = 0.04 * mean KL (0.01 for k3)
    torch.testing.assert_close(loss, torch.tensor(0.04 * expected_kl))
    torch.testing.assert_close(stats["kl"], torch.tensor(expected_kl))
    torch.testing.assert_close(stats["kl_k3"], torch.tensor(0.25))
    torch.testing.assert_close(stats["kl_k2"], torch.tensor(0.5 * math.log(2) ** 2))
    torch.testing.assert_close(stats["kl_k1"], torch.tensor(0.0))
    assert stats["pg_loss"] == 0.0


def test_without_reference_kl_stats_are_zero():
    logp, old_logp, _, advantages, mask = _random_batch(3)
    loss, stats = grpo_loss(logp, old_logp, None, advantages, mask, beta=0.0)
    assert all(stats[key] == 0.0 for key in ("kl", "kl_k1", "kl_k2", "kl_k3"))
    torch.testing.assert_close(loss, stats["pg_loss"])


# ----------------------------------------------------------------------------- masking, edge cases


@pytest.mark.parametrize("ratio_level", ["token", "sequence"])
@pytest.mark.parametrize("aggregation", ["sequence", "token", "constant"])
def test_padded_tokens_do_not_count(aggregation, ratio_level):
    logp, old_logp, ref_logp, _, mask = _random_batch(4)
    advantages = torch.randn(mask.shape, generator=torch.Generator().manual_seed(5))  # [N, T]
    kwargs = dict(aggregation=aggregation, ratio_level=ratio_level, epsilon=0.1)
    loss, stats = grpo_loss(logp, old_logp, ref_logp, advantages, mask, **kwargs)
    (grad,) = torch.autograd.grad(loss, logp)

    pad = ~mask
    huge_logp = torch.where(pad, torch.full_like(logp, 1e4), logp.detach()).requires_grad_()
    huge_old = torch.where(pad, -1e4, old_logp)
    huge_ref = torch.where(pad, float("nan"), ref_logp)
    huge_adv = torch.where(pad, 1e6, advantages)
    loss2, stats2 = grpo_loss(huge_logp, huge_old, huge_ref, huge_adv, mask, **kwargs)
    (grad2,) = torch.autograd.grad(loss2, huge_logp)
    assert torch.equal(loss2, loss)
    assert all(torch.equal(stats2[key], stats[key]) for key in stats)
    assert torch.equal(grad2, grad) and torch.equal(grad[pad], torch.zeros(int(pad.sum())))


def test_no_masked_token_gives_connected_zero():
    logp, old_logp, ref_logp, advantages, _ = _random_batch(6)
    mask = torch.zeros(logp.shape, dtype=torch.bool)
    for aggregation in ("sequence", "token", "constant"):
        loss, stats = grpo_loss(logp, old_logp, ref_logp, advantages, mask, aggregation=aggregation)
        assert loss == 0.0 and loss.requires_grad
        (grad,) = torch.autograd.grad(loss, logp)
        assert torch.equal(grad, torch.zeros_like(logp))
        assert all(not torch.isnan(value) for value in stats.values())


def test_single_token_rows():
    # sequence aggregation over rows of one token each is the token mean: (-1 + 0.5) / 2 -> loss 0.25
    logp = torch.zeros(2, 1, requires_grad=True)
    loss, _ = grpo_loss(logp, None, None, torch.tensor([-1.0, 0.5]), torch.ones(2, 1), beta=0.0)
    torch.testing.assert_close(loss, torch.tensor(0.25))


def test_stats_are_detached_scalars():
    logp, old_logp, ref_logp, advantages, mask = _random_batch(7)
    loss, stats = grpo_loss(logp, old_logp, ref_logp, advantages, mask)
    assert STAT_KEYS <= set(stats)
    assert all(v.dim() == 0 and not v.requires_grad and v.dtype == torch.float32 for v in stats.values())
    torch.testing.assert_close(stats["objective"], -loss.detach())
    torch.testing.assert_close(stats["clip_frac"], stats["clip_frac_low"] + stats["clip_frac_high"])


def test_bf16_inputs_use_float32_math():
    logp, old_logp, ref_logp, advantages, mask = _random_batch(8)
    logp_bf16 = logp.detach().bfloat16().requires_grad_()
    loss, _ = grpo_loss(logp_bf16, old_logp.bfloat16(), ref_logp.bfloat16(), advantages.bfloat16(), mask)
    loss.backward()
    assert loss.dtype == torch.float32 and logp_bf16.grad.dtype == torch.bfloat16
    # the same values, upcast first, give exactly the same loss
    up = [x.bfloat16().float() for x in (logp.detach(), old_logp, ref_logp, advantages)]
    loss_up, _ = grpo_loss(*up[:3], up[3], mask)
    assert torch.equal(loss, loss_up)


# ----------------------------------------------------------------------------- GSPO


@pytest.mark.parametrize("epsilon, expected_objective, clip_high", [
    # row 0: logp - old = [0.1, 0.3, pad] -> s_0 = exp(0.2) = 1.221403, A = +1
    # row 1: logp - old = [-0.4, 0.0, 0.1] -> s_1 = exp(-0.1) = 0.904837, A = -1
    # eps 0.3: nothing clipped; objective = (1.221403 - 0.904837) / 2 = 0.158283
    (0.3, (math.exp(0.2) - math.exp(-0.1)) / 2, 0.0),
    # eps 0.2: s_0 clipped to 1.2; objective = (1.2 - 0.904837) / 2 = 0.147581; row 0 = 2 of 5 tokens
    (0.2, (1.2 - math.exp(-0.1)) / 2, 0.4),
])
def test_gspo_sequence_ratio(epsilon, expected_objective, clip_high):
    old_logp = torch.full((2, 3), -1.0)
    logp = old_logp + torch.tensor([[0.1, 0.3, 7.0], [-0.4, 0.0, 0.1]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    loss, stats = grpo_loss(logp, old_logp, None, torch.tensor([1.0, -1.0]), mask, epsilon=epsilon, beta=0.0,
                            ratio_level="sequence")
    torch.testing.assert_close(loss, torch.tensor(-expected_objective))
    torch.testing.assert_close(stats["clip_frac_high"], torch.tensor(clip_high))


def test_gspo_on_policy_gradient_matches_grpo():
    # at rho = s = 1 with outcome advantages, d/dlogp_it of both is A_i / (N |o_i|)
    logp, _, _, advantages, mask = _random_batch(9)
    grads = []
    for ratio_level in ("token", "sequence"):
        loss, _ = grpo_loss(logp, None, None, advantages, mask, beta=0.0, ratio_level=ratio_level)
        grads.append(torch.autograd.grad(loss, logp)[0])
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------- errors


def test_bad_inputs():
    logp, old_logp, ref_logp, advantages, mask = _random_batch(10)
    with pytest.raises(ValueError, match=r"aggregation 'mean'.*\['sequence', 'token', 'constant'\]"):
        grpo_loss(logp, old_logp, ref_logp, advantages, mask, aggregation="mean")
    with pytest.raises(ValueError, match=r"ratio_level 'group'.*\['token', 'sequence'\]"):
        grpo_loss(logp, old_logp, ref_logp, advantages, mask, ratio_level="group")
    with pytest.raises(ValueError, match=r"KL estimator 'k5'.*\['k1', 'k2', 'k3'\]"):
        grpo_loss(logp, old_logp, ref_logp, advantages, mask, kl_estimator="k5")
    with pytest.raises(ValueError, match="ref_logp is required when beta != 0"):
        grpo_loss(logp, old_logp, None, advantages, mask, beta=0.04)
    with pytest.raises(ValueError, match="advantages must be"):
        grpo_loss(logp, old_logp, ref_logp, advantages[:3], mask)
    with pytest.raises(ValueError, match="old_logp must have"):
        grpo_loss(logp, old_logp[:, :2], ref_logp, advantages, mask)
    with pytest.raises(ValueError, match="logp and mask"):
        grpo_loss(logp, old_logp, ref_logp, advantages, mask[:, :2])
