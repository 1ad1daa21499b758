"""grpo.algo.aggregation: "constant" over the longest completion allowed, "token" over the whole GRPO
step's token count (across mini-batches and processes), with hand-worked numbers."""

import pytest
import torch

from grpo.algo.aggregation import constant_mean, token_mean, token_normaliser
from grpo.algo.cispo import CISPOLoss
from grpo.algo.loss import GRPOLoss, grpo_loss

# the step's rollout: 4 rows, T = 3; on-policy with beta 0 each token contributes A_it to the objective
ADV = torch.tensor([[1.0, 2.0, 3.0], [4.0, 99.0, 99.0], [5.0, 99.0, 99.0], [6.0, 7.0, 99.0]])
MASK = torch.tensor([[1, 1, 1], [1, 0, 0], [1, 0, 0], [1, 1, 0]], dtype=torch.bool)
# mini-batch A = rows 0-1: tokens 1 2 3 4 (sum 10, 4 tokens); mini-batch B = rows 2-3: tokens 5 6 7 (sum 18, 3 tokens)
# the step: 7 tokens, sum 28, token mean 4


def test_constant_divides_by_the_longest_completion_allowed_not_the_batchs():
    # rows [1, 2, 3], [4, pad, pad]: the batch's longest completion is 3 tokens, max_new_tokens is 8
    per_token = ADV[:2]
    mask = MASK[:2].float()
    # Dr. GRPO: (1 + 2 + 3 + 4) / (N x max_len) = 10 / (2 x 8) = 0.625; the old T-based value was 10 / (2 x 3)
    torch.testing.assert_close(constant_mean(per_token, mask, max_len=8), torch.tensor(0.625))
    torch.testing.assert_close(constant_mean(per_token, mask), torch.tensor(10 / 6))  # None: the batch's width
    with pytest.raises(ValueError, match="max_len=2 is shorter"):
        constant_mean(per_token, mask, max_len=2)
    # through the losses, max_completion_len bound from sampling.max_new_tokens
    logp = torch.full((2, 3), -1.0, requires_grad=True)
    for loss_fn in (GRPOLoss(beta=0.0, aggregation="constant", max_completion_len=8),
                    CISPOLoss(beta=0.0, aggregation="constant", max_completion_len=8)):
        loss, stats = loss_fn(logp, None, None, ADV[:2], MASK[:2])
        (grad,) = torch.autograd.grad(loss, logp)
        if isinstance(loss_fn, GRPOLoss):
            torch.testing.assert_close(loss, torch.tensor(-0.625))  # rho = 1: objective = sum A / 16
        # d loss / d logp_it = -A_it / 16 on real tokens (GRPO: rho A; CISPO: weight 1 x A x logp)
        torch.testing.assert_close(grad, -(ADV[:2] * MASK[:2]) / 16)


def test_token_over_two_minibatches_is_the_steps_token_mean():
    step_tokens = int(MASK.sum())  # 7
    a = token_mean(ADV[:2], MASK[:2].float(), num_tokens=token_normaliser(step_tokens))  # 10 / 7
    b = token_mean(ADV[2:], MASK[2:].float(), num_tokens=token_normaliser(step_tokens))  # 18 / 7
    torch.testing.assert_close(a, torch.tensor(10 / 7))
    torch.testing.assert_close(b, torch.tensor(18 / 7))
    torch.testing.assert_close(a + b, torch.tensor(4.0))  # = 28 / 7, the step's token mean
    # per mini-batch (the old way): 10 / 4 + 18 / 3 = 8.5 over the two updates, and short rows weigh more
    assert token_mean(ADV[:2], MASK[:2].float()) + token_mean(ADV[2:], MASK[2:].float()) == pytest.approx(8.5)


def test_token_gradients_of_the_minibatches_add_up_to_the_steps():
    logp = torch.full((4, 3), -1.0, requires_grad=True)
    whole, _ = grpo_loss(logp, None, None, ADV, MASK, beta=0.0, aggregation="token")  # one call: num_tokens = 7
    (want,) = torch.autograd.grad(whole, logp)
    torch.testing.assert_close(want, -(ADV * MASK) / 7)  # every token of the step weighs 1/7
    n = token_normaliser(7)
    got = torch.zeros_like(logp)
    for rows in (slice(0, 2), slice(2, 4)):
        loss, stats = GRPOLoss(beta=0.0, aggregation="token")(logp[rows], None, None, ADV[rows], MASK[rows], num_tokens=n)
        (grad,) = torch.autograd.grad(loss, logp)
        got += grad
    torch.testing.assert_close(got, want)
    # CISPO aggregates the same way (on-policy its gradient is GRPO's)
    got = sum(torch.autograd.grad(CISPOLoss(beta=0.0)(logp[r], None, None, ADV[r], MASK[r], num_tokens=n)[0], logp)[0]
              for r in (slice(0, 2), slice(2, 4)))
    torch.testing.assert_close(got, want)


def test_token_normaliser_accounts_for_processes_and_accumulation():
    # 2 processes: rank 0 holds rows 0-1 (4 tokens, sum 10), rank 1 rows 2-3 (3 tokens, sum 18): step_tokens = 7 on both
    n = token_normaliser(7, world_size=2)
    assert n == 3.5
    rank0, rank1 = token_mean(ADV[:2], MASK[:2].float(), num_tokens=n), token_mean(ADV[2:], MASK[2:].float(), num_tokens=n)
    torch.testing.assert_close((rank0 + rank1) / 2, torch.tensor(4.0))  # DDP's average = 28 / 7
    # accumulating 2 mini-batches per optimizer step: Lightning divides each loss by 2, so each counts twice as much
    n = token_normaliser(7, world_size=1, accumulate=2)
    assert n == 3.5
    torch.testing.assert_close((token_mean(ADV[:2], MASK[:2].float(), num_tokens=n)
                                + token_mean(ADV[2:], MASK[2:].float(), num_tokens=n)) / 2, torch.tensor(4.0))
    assert token_normaliser(0) == 1.0  # a step with no token in the loss: loss 0, no division by zero
    with pytest.raises(ValueError):
        token_normaliser(7, world_size=0)


def test_sequence_ignores_the_step_count():
    logp = torch.full((4, 3), -1.0, requires_grad=True)
    plain, _ = grpo_loss(logp, None, None, ADV, MASK, beta=0.0, aggregation="sequence")
    given, _ = grpo_loss(logp, None, None, ADV, MASK, beta=0.0, aggregation="sequence", num_tokens=123.0, max_len=50)
    assert torch.equal(plain, given)
