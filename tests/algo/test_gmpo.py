"""grpo.algo.gmpo.GMPOLoss: the geometric mean of clipped token ratios, by hand."""

import math

import pytest
import torch

from grpo.algo.gmpo import GMPOLoss
from grpo.algo.loss import grpo_loss


def rows(log_ratios):
    """logp, old_logp [N, T] with logp - old_logp = the given log-ratios (old_logp = -1), every token real."""
    old_logp = torch.full((len(log_ratios), len(log_ratios[0])), -1.0)
    return (old_logp + torch.tensor(log_ratios)).requires_grad_(), old_logp, torch.ones_like(old_logp, dtype=torch.bool)


def test_hand_worked_clipped_geometric_mean():
    # log-space clip [-0.4, 0.4], "sequence" aggregation over 2 rows
    # row 0: l = [0.5, -0.1], A = +1: clipped upward only -> [0.4, -0.1]; mean 0.15; exp = 1.161834; A * it = 1.161834
    # row 1: l = [-0.5, 0.2], A = -2: clipped downward only -> [-0.4, 0.2]; mean -0.1; exp = 0.904837; A * it = -1.809675
    # J = (1.161834 - 1.809675) / 2 = -0.323920; loss = 0.323920
    # d loss / d logp: the clipped tokens get 0; the others -(1/2)(1/|o_i|) A_i exp(mean):
    #   row 0 token 1: -1.161834 / 4 = -0.290459;  row 1 token 1: -(-2 * 0.904837) / 4 = +0.452419
    logp, old_logp, mask = rows([[0.5, -0.1], [-0.5, 0.2]])
    loss, stats = GMPOLoss(epsilon=0.4, beta=0.0)(logp, old_logp, None, torch.tensor([1.0, -2.0]), mask)
    assert math.isclose(loss.item(), 0.323920, abs_tol=1e-6)
    torch.testing.assert_close(torch.autograd.grad(loss, logp)[0], torch.tensor([[0.0, -0.290459], [0.0, 0.452419]]),
                               atol=1e-6, rtol=0)
    assert stats["clip_frac_high"] == 0.25 and stats["clip_frac_low"] == 0.25


def test_geometric_not_arithmetic_mean():
    # one row, l = [0.5, -0.1], A = +1, a clip range too wide to act (eps = 10):
    #   GMPO: exp((0.5 - 0.1) / 2) = exp(0.2) = 1.221403;  GRPO (no clip): (e^0.5 + e^-0.1) / 2 = 1.276779
    logp, old_logp, mask = rows([[0.5, -0.1]])
    gmpo, _ = GMPOLoss(epsilon=10.0, beta=0.0)(logp, old_logp, None, torch.tensor([1.0]), mask)
    grpo, _ = grpo_loss(logp, old_logp, None, torch.tensor([1.0]), mask, epsilon=10.0, beta=0.0)
    assert math.isclose(-gmpo.item(), 1.221403, abs_tol=1e-6) and math.isclose(-grpo.item(), 1.276779, abs_tol=1e-6)


def test_on_policy_gradient_equals_grpo_sequence_mean():
    # rho = 1: d/dl_t of A exp(mean l) = A / |o_i|, GRPO's gradient under "sequence" aggregation
    g = torch.Generator().manual_seed(0)
    logp = (-torch.rand(4, 5, generator=g) * 3).requires_grad_()
    mask = torch.arange(5)[None, :] < torch.tensor([5, 3, 1, 4])[:, None]
    advantages, ref_logp = torch.randn(4, generator=g), logp.detach() + 0.1 * torch.randn(4, 5, generator=g)
    gmpo, _ = GMPOLoss(beta=0.04)(logp, None, ref_logp, advantages, mask)
    grpo, _ = grpo_loss(logp, None, ref_logp, advantages, mask, beta=0.04, aggregation="sequence")
    torch.testing.assert_close(torch.autograd.grad(gmpo, logp)[0], torch.autograd.grad(grpo, logp)[0])


def test_bad_clip_range():
    with pytest.raises(ValueError, match="loss.epsilon"):
        GMPOLoss(epsilon=0.0)
