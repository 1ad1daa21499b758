"""grpo.algo.dual_clip.DualClipLoss: the floor delta * A on negative-advantage tokens, by hand."""

import math

import pytest
import torch

from grpo.algo.dual_clip import DualClipLoss
from grpo.algo.loss import grpo_loss


def test_hand_worked_floor_on_negative_advantages():
    # one row, rho = [5, 2, 5], per-token A = [-1, -1, +1], eps = 0.2, delta = 3, "sequence" aggregation:
    #   token 0: min(5 * -1, 1.2 * -1) = -5, floored: max(-5, -3) = -3 (a constant: no gradient)
    #   token 1: min(-2, -1.2) = -2 > -3: kept, gradient d(rho A)/d logp = rho A = -2
    #   token 2: min(5, 1.2) = 1.2 (the ordinary clip, no gradient)
    #   J = (-3 - 2 + 1.2) / 3 = -1.266667; loss = 1.266667; d loss / d logp = [0, +2/3, 0]
    # GRPO alone: J = (-5 - 2 + 1.2) / 3 = -1.933333 and token 0's gradient is -(-5)/3 = +1.666667
    old_logp = torch.full((1, 3), -1.0)
    logp = (old_logp + torch.tensor([[5.0, 2.0, 5.0]]).log()).requires_grad_()
    mask, advantages = torch.ones(1, 3, dtype=torch.bool), torch.tensor([[-1.0, -1.0, 1.0]])
    loss, stats = DualClipLoss(delta=3.0, epsilon=0.2, beta=0.0)(logp, old_logp, None, advantages, mask)
    assert math.isclose(loss.item(), 1.266667, abs_tol=1e-6)
    torch.testing.assert_close(torch.autograd.grad(loss, logp)[0], torch.tensor([[0.0, 2 / 3, 0.0]]))
    assert math.isclose(stats["clip_frac_dual"].item(), 1 / 3, abs_tol=1e-6)
    grpo, _ = grpo_loss(logp, old_logp, None, advantages, mask, epsilon=0.2, beta=0.0)
    assert math.isclose(grpo.item(), 1.933333, abs_tol=1e-6)
    assert math.isclose(torch.autograd.grad(grpo, logp)[0][0, 0].item(), 5 / 3, abs_tol=1e-6)


def test_equals_grpo_inside_the_floor():
    g = torch.Generator().manual_seed(0)
    logp = (-torch.rand(4, 5, generator=g) * 3).requires_grad_()
    old_logp = logp.detach() + 0.3 * torch.randn(4, 5, generator=g)  # rho within e^+-1: never below the floor at delta = 10
    mask = torch.arange(5)[None, :] < torch.tensor([5, 3, 1, 4])[:, None]
    advantages, ref_logp = torch.randn(4, generator=g), logp.detach() + 0.1 * torch.randn(4, 5, generator=g)
    dual, _ = DualClipLoss(delta=10.0, beta=0.04)(logp, old_logp, ref_logp, advantages, mask)
    grpo, _ = grpo_loss(logp, old_logp, ref_logp, advantages, mask, beta=0.04)
    torch.testing.assert_close(dual, grpo)


def test_delta_must_exceed_the_upper_clip():
    with pytest.raises(ValueError, match="loss.delta"):
        DualClipLoss(delta=1.1, epsilon=0.2)
