"""grpo.algo.entropy.EntropyControlledLoss: top-q entropy tokens and the entropy bonus, by hand."""

import math

import pytest
import torch

from grpo.algo.entropy import EntropyControlledLoss, top_entropy_mask
from grpo.algo.loss import GRPOLoss
from grpo.rollout.logprobs import _token_logprobs

ENTROPY = torch.tensor([[0.1, 2.0, 0.5, 1.5, 0.3]])
MASK = torch.ones(1, 5, dtype=torch.bool)


def test_hand_worked_top_entropy_tokens_keep_their_advantage():
    # q = 0.4: the 0.6 quantile of the sorted entropies [0.1, 0.3, 0.5, 1.5, 2.0] sits at position 0.6 * 4 = 2.4:
    #   0.5 + 0.4 * (1.5 - 0.5) = 0.9; tokens 1 (2.0) and 3 (1.5) keep A = +1, the rest get 0
    # on-policy GRPO, beta 0, "sequence": J = (0 + 1 + 0 + 1 + 0) / 5 = 0.4; loss = -0.4 (GRPO alone: -1)
    #   d loss / d logp = -keep * A / 5 = [0, -0.2, 0, -0.2, 0]
    logp = torch.full((1, 5), -1.0, requires_grad=True)
    loss_fn = EntropyControlledLoss(GRPOLoss(beta=0.0), top_entropy_quantile=0.4)
    loss, stats = loss_fn(logp, None, None, torch.tensor([1.0]), MASK, entropy=ENTROPY)
    assert math.isclose(loss.item(), -0.4, abs_tol=1e-6)
    torch.testing.assert_close(torch.autograd.grad(loss, logp)[0], torch.tensor([[0.0, -0.2, 0.0, -0.2, 0.0]]))
    assert math.isclose(stats["entropy_kept_frac"].item(), 0.4, abs_tol=1e-6)
    assert loss_fn.needs_entropy and not loss_fn.entropy_grad and loss_fn.beta == 0.0


def test_top_entropy_mask_ignores_padding():
    # the padded position's entropy (9) neither counts in the quantile nor is kept; q = 0.5 of [0.1, 0.5, 2.0]:
    #   the 0.5 quantile = 0.5 -> tokens with entropy >= 0.5 kept
    entropy, mask = torch.tensor([[0.1, 2.0, 0.5, 9.0]]), torch.tensor([[True, True, True, False]])
    assert top_entropy_mask(entropy, mask, 0.5).tolist() == [[False, True, True, False]]


def test_hand_worked_entropy_bonus():
    # coef 0.1, "sequence": bonus = (0.1 + 2 + 0.5 + 1.5 + 0.3) / 5 = 0.88; loss = GRPO's - 0.1 * 0.88 = -1 - 0.088
    #   d loss / d entropy = -0.1 / 5 = -0.02 per token
    logp = torch.full((1, 5), -1.0, requires_grad=True)
    entropy = ENTROPY.clone().requires_grad_()
    loss_fn = EntropyControlledLoss(GRPOLoss(beta=0.0), entropy_coef=0.1, aggregation="sequence")
    loss, stats = loss_fn(logp, None, None, torch.tensor([1.0]), MASK, entropy=entropy)
    assert math.isclose(loss.item(), -1.088, abs_tol=1e-6) and math.isclose(stats["entropy_bonus"].item(), 0.88, abs_tol=1e-6)
    torch.testing.assert_close(torch.autograd.grad(loss, entropy)[0], torch.full((1, 5), -0.02))
    assert loss_fn.entropy_grad


def test_entropy_carries_its_gradient_only_when_asked():
    logits = torch.randn(2, 3, 7, requires_grad=True)
    targets = torch.randint(7, (2, 3))
    assert _token_logprobs(logits, targets, 1.0, with_entropy=True)[1].grad_fn is None
    _, entropy = _token_logprobs(logits, targets, 1.0, with_entropy=True, entropy_grad=True)
    # uniform logits have the largest entropy: the bonus pushes logits apart, the gradient is not zero
    assert entropy.grad_fn is not None and torch.autograd.grad(entropy.sum(), logits)[0].abs().sum() > 0


def test_bad_settings():
    with pytest.raises(ValueError, match="top_entropy_quantile"):
        EntropyControlledLoss(GRPOLoss(), top_entropy_quantile=0.0)
    with pytest.raises(ValueError, match="change nothing"):
        EntropyControlledLoss(GRPOLoss())
    with pytest.raises(ValueError, match="entropy="):
        EntropyControlledLoss(GRPOLoss(beta=0.0), top_entropy_quantile=0.2)(
            torch.zeros(1, 5), None, None, torch.tensor([1.0]), MASK)
