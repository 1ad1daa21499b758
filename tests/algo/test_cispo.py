"""grpo.algo.cispo.CISPOLoss: the clipped, stop-gradient importance weight times the log-prob, by hand."""

import math

import torch

from grpo.algo.cispo import CISPOLoss
from grpo.algo.loss import grpo_loss


def one_row(rho):
    """logp, old_logp [1, T] with exp(logp - old_logp) = rho; old_logp = -1 everywhere."""
    old_logp = torch.full((1, len(rho)), -1.0)
    logp = (old_logp + torch.tensor([rho]).log()).requires_grad_()
    return logp, old_logp, torch.ones(1, len(rho), dtype=torch.bool)


def test_hand_worked_weight_is_clipped_not_the_gradient():
    # rho = [0.5, 1, 2], A = +1, eps_high = 0.28, no lower bound, "token" aggregation over 3 tokens:
    #   weight = clip(rho, max 1.28) = [0.5, 1, 1.28] (no gradient through it)
    #   logp = -1 + log(rho) = [-1.693147, -1, -0.306853]
    #   J = (0.5 * -1.693147 + 1 * -1 + 1.28 * -0.306853) / 3 = -2.239345 / 3 = -0.746448; loss = -J
    #   d loss / d logp = -weight * A / 3 = [-0.166667, -0.333333, -0.426667]: the clipped token keeps its gradient
    logp, old_logp, mask = one_row([0.5, 1.0, 2.0])
    loss, stats = CISPOLoss(epsilon_high=0.28, beta=0.0)(logp, old_logp, None, torch.tensor([1.0]), mask)
    assert math.isclose(loss.item(), 0.746448, abs_tol=1e-6)
    (grad,) = torch.autograd.grad(loss, logp)
    torch.testing.assert_close(grad, torch.tensor([[-0.5 / 3, -1 / 3, -1.28 / 3]]))
    assert math.isclose(stats["clip_frac_high"].item(), 1 / 3, abs_tol=1e-6) and stats["clip_frac_low"] == 0
    # GRPO's clipped surrogate gives the same token no gradient at all (rho > 1 + eps with A > 0)
    grpo, _ = grpo_loss(logp, old_logp, None, torch.tensor([1.0]), mask, epsilon=0.28, beta=0.0, aggregation="token")
    assert torch.autograd.grad(grpo, logp)[0][0, 2] == 0


def test_lower_bound():
    # epsilon = 0.2: the weight of rho = 0.5 becomes 0.8, so d loss / d logp_0 = -0.8 * A / 1 with A = -2: +1.6
    logp, old_logp, mask = one_row([0.5])
    loss, stats = CISPOLoss(epsilon=0.2, epsilon_high=0.28, beta=0.0)(logp, old_logp, None, torch.tensor([-2.0]), mask)
    (grad,) = torch.autograd.grad(loss, logp)
    torch.testing.assert_close(grad, torch.tensor([[1.6]]))
    assert stats["clip_frac_low"] == 1.0


def test_on_policy_gradient_equals_grpo():
    g = torch.Generator().manual_seed(0)
    logp = (-torch.rand(4, 5, generator=g) * 3).requires_grad_()
    mask = torch.arange(5)[None, :] < torch.tensor([5, 3, 1, 4])[:, None]
    advantages, ref_logp = torch.randn(4, generator=g), logp.detach() + 0.1 * torch.randn(4, 5, generator=g)
    cispo, _ = CISPOLoss(beta=0.04, aggregation="sequence")(logp, None, ref_logp, advantages, mask)
    grpo, _ = grpo_loss(logp, None, ref_logp, advantages, mask, beta=0.04, aggregation="sequence")
    torch.testing.assert_close(torch.autograd.grad(cispo, logp)[0], torch.autograd.grad(grpo, logp)[0])
