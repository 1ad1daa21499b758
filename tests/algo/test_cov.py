"""grpo.algo.cov: Clip-Cov and KL-Cov pick tokens by the covariance of log-prob and advantage, by hand."""

import math

import pytest
import torch

from grpo.algo.cov import ClipCovLoss, KLCovLoss
from grpo.algo.loss import grpo_loss

# one row of 4 tokens, per-token A = [3, -1, -1, -1] (mean 0)
ADVANTAGES = torch.tensor([[3.0, -1.0, -1.0, -1.0]])
MASK = torch.ones(1, 4, dtype=torch.bool)


def test_hand_worked_clip_cov_detaches_the_high_covariance_token():
    # on-policy, logp = [-0.5, -2.5, -2.5, -2.5]: mean -2, deviations [1.5, -0.5, -0.5, -0.5]
    #   Cov = A * deviation = [4.5, 0.5, 0.5, 0.5]; only token 0 lies in (1, 5)
    #   clip_ratio 0.25: max(1, floor(0.25 * 4)) = 1 token drawn, token 0 (the only candidate, whatever the seed)
    # rho = 1, "sequence" aggregation: J = (3 - 1 - 1 - 1) / 4 = 0 either way (the detached token keeps its value)
    #   d loss / d logp = -A / 4 = [-0.75, 0.25, 0.25, 0.25] for GRPO; token 0 detached: [0, 0.25, 0.25, 0.25]
    logp = torch.tensor([[-0.5, -2.5, -2.5, -2.5]], requires_grad=True)
    loss, stats = ClipCovLoss(clip_ratio=0.25, cov_low=1.0, cov_high=5.0, beta=0.0, aggregation="sequence")(
        logp, None, None, ADVANTAGES, MASK)
    assert math.isclose(loss.item(), 0.0, abs_tol=1e-7)
    torch.testing.assert_close(torch.autograd.grad(loss, logp)[0], torch.tensor([[0.0, 0.25, 0.25, 0.25]]))
    assert stats["cov_clip_frac"] == 0.25
    grpo, _ = grpo_loss(logp, None, None, ADVANTAGES, MASK, beta=0.0)
    torch.testing.assert_close(torch.autograd.grad(grpo, logp)[0], torch.tensor([[-0.75, 0.25, 0.25, 0.25]]))


def test_clip_cov_draws_a_seeded_share_of_the_candidates():
    # 2 rows x 50 tokens; advantages +-2 and log-probs that make many tokens candidates; clip_ratio 0.05: 5 tokens
    g = torch.Generator().manual_seed(0)
    advantages = torch.tensor([2.0, -2.0])
    logp = torch.cat([-0.1 - torch.rand(1, 50, generator=g), -4.0 - torch.rand(1, 50, generator=g)]).requires_grad_()
    mask = torch.ones(2, 50, dtype=torch.bool)

    def detached(seed):
        loss, stats = ClipCovLoss(clip_ratio=0.05, cov_low=1.0, cov_high=5.0, seed=seed, beta=0.0)(logp, None, None, advantages, mask)
        assert stats["cov_clip_frac"] == 0.05
        return torch.autograd.grad(loss, logp)[0] == 0

    assert int(detached(0).sum()) == 5
    assert torch.equal(detached(0), detached(0)) and not torch.equal(detached(0), detached(1))


def test_hand_worked_kl_cov_penalises_the_top_covariance_token():
    # old_logp = [-0.5, -2.5, -2.5, -2.5], logp = old + [0.1, 0, 0, 0] = [-0.4, -2.5, -2.5, -2.5]
    #   mean logp -1.975, deviations [1.575, -0.525, -0.525, -0.525], Cov = [4.725, 0.525, 0.525, 0.525]
    #   kl_ratio 0.25: the top 1 token by Cov, token 0, gets - kl_coef * |0.1|
    #   J_t = [3 e^0.1 - 0.1, -1, -1, -1] = [3.215513, -1, -1, -1]; "sequence": J = 0.215513 / 4 = 0.053878
    #   d loss / d logp = -[3 e^0.1 - 1, -1, -1, -1] / 4 = [-0.578878, 0.25, 0.25, 0.25]
    old_logp = torch.tensor([[-0.5, -2.5, -2.5, -2.5]])
    logp = (old_logp + torch.tensor([[0.1, 0.0, 0.0, 0.0]])).requires_grad_()
    loss, stats = KLCovLoss(kl_ratio=0.25, kl_coef=1.0, beta=0.0, aggregation="sequence")(logp, old_logp, None, ADVANTAGES, MASK)
    assert math.isclose(loss.item(), -0.053878, abs_tol=1e-6)
    torch.testing.assert_close(torch.autograd.grad(loss, logp)[0], torch.tensor([[-0.578878, 0.25, 0.25, 0.25]]))
    assert stats["kl_cov_frac"] == 0.25


def test_kl_cov_says_it_does_nothing_on_policy():
    logp = torch.tensor([[-0.5, -2.5, -2.5, -2.5]], requires_grad=True)
    with pytest.warns(UserWarning, match="grpo.mu > 1"):
        KLCovLoss(beta=0.0)(logp, None, None, ADVANTAGES, MASK)


def test_bad_settings():
    with pytest.raises(ValueError, match="loss.clip_ratio"):
        ClipCovLoss(clip_ratio=0.0)
    with pytest.raises(ValueError, match="loss.kl_ratio"):
        KLCovLoss(kl_ratio=2.0)
