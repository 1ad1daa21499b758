"""grpo.algo.sapo.SAPOLoss: the soft sigmoid gate, by hand."""

import math

import torch

from grpo.algo.loss import grpo_loss
from grpo.algo.sapo import SAPOLoss


def rows(rhos):
    """logp, old_logp [N, T] with exp(logp - old_logp) = rho (padded with rho = 1, masked out); old_logp = -1."""
    T = max(len(r) for r in rhos)
    rho = torch.tensor([r + [1.0] * (T - len(r)) for r in rhos])
    old_logp = torch.full_like(rho, -1.0)
    mask = torch.tensor([[t < len(r) for t in range(T)] for r in rhos])
    return (old_logp + rho.log()).requires_grad_(), old_logp, mask


def test_hand_worked_gate_value_and_gradient():
    # row 0: rho = [1, 2], A = +1, tau_pos = 1;  row 1: rho = [0.5], A = -1, tau_neg = 1.05; "sequence" aggregation
    #   f(1) = 4 sigmoid(0) = 2;  f(2) = 4 sigmoid(1) = 2.924234;  row 0 mean = (2 + 2.924234) / 2 = 2.462117
    #   row 1: p = sigmoid(1.05 * -0.5) = 0.371684, f = p * 4 / 1.05 = 1.415938, times A = -1: -1.415938
    #   J = (2.462117 - 1.415938) / 2 = 0.523089; loss = -J
    # d loss / d logp = -(1/rows)(1/|o_i|) w rho A with w = 4 p (1 - p):
    #   row 0: w(1) = 1 -> -0.25;  w(2) = 4 * 0.731059 * 0.268941 = 0.786448, * rho 2 / 4 -> -0.393224
    #   row 1: w = 4 * 0.371684 * 0.628316 = 0.934140, * rho 0.5 * A -1 / 2 -> +0.233535
    logp, old_logp, mask = rows([[1.0, 2.0], [0.5]])
    loss, stats = SAPOLoss(tau_pos=1.0, tau_neg=1.05, beta=0.0)(logp, old_logp, None, torch.tensor([1.0, -1.0]), mask)
    assert math.isclose(loss.item(), -0.523089, abs_tol=1e-6)
    (grad,) = torch.autograd.grad(loss, logp)
    torch.testing.assert_close(grad, torch.tensor([[-0.25, -0.393224], [0.233535, 0.0]]), atol=1e-6, rtol=0)
    # the rho = 2 token is past GRPO's hard clip (1.2) with A > 0: GRPO gives it no gradient, SAPO a damped one
    grpo, _ = grpo_loss(logp, old_logp, None, torch.tensor([1.0, -1.0]), mask, epsilon=0.2, beta=0.0)
    assert torch.autograd.grad(grpo, logp)[0][0, 1] == 0
    assert stats["clip_frac"] == 0  # every weight here is above one half


def test_temperature_depends_on_the_sign_of_the_advantage():
    # the same rho = 2 with A = +1 (tau_pos = 1) and A = -1 (tau_neg = 3): w = 4 sigmoid(1)(1 - sigmoid(1)) = 0.786448
    # for A > 0, 4 sigmoid(3)(1 - sigmoid(3)) = 4 * 0.952574 * 0.047426 = 0.180707 for A < 0;
    # d loss / d logp = -(1/2) w rho A: -0.786448 and +0.180707
    logp, old_logp, mask = rows([[2.0], [2.0]])
    loss, stats = SAPOLoss(tau_pos=1.0, tau_neg=3.0, beta=0.0)(logp, old_logp, None, torch.tensor([1.0, -1.0]), mask)
    torch.testing.assert_close(torch.autograd.grad(loss, logp)[0], torch.tensor([[-0.786448], [0.180707]]), atol=1e-6, rtol=0)
    assert stats["clip_frac_high"] == 0.5  # the A < 0 token's weight 0.18 < 1/2


def test_on_policy_gradient_equals_grpo():
    g = torch.Generator().manual_seed(0)
    logp = (-torch.rand(4, 5, generator=g) * 3).requires_grad_()
    mask = torch.arange(5)[None, :] < torch.tensor([5, 3, 1, 4])[:, None]
    advantages, ref_logp = torch.randn(4, generator=g), logp.detach() + 0.1 * torch.randn(4, 5, generator=g)
    sapo, _ = SAPOLoss(beta=0.04, aggregation="token")(logp, None, ref_logp, advantages, mask)
    grpo, _ = grpo_loss(logp, None, ref_logp, advantages, mask, beta=0.04, aggregation="token")
    torch.testing.assert_close(torch.autograd.grad(sapo, logp)[0], torch.autograd.grad(grpo, logp)[0])


def test_bad_temperature():
    import pytest

    with pytest.raises(ValueError, match="tau_neg"):
        SAPOLoss(tau_neg=0.0)
