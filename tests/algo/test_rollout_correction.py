"""grpo.algo.rollout_correction: the mismatch statistics, TIS and MIS on hand-made log-probs."""

from __future__ import annotations

import math

import pytest
import torch

from grpo.algo.loss import grpo_loss
from grpo.algo.rollout_correction import MaskedIS, NoCorrection, TruncatedIS, mismatch_stats

# row 0: pi_old_trainer [0.5, 0.6, 0.2, 0.42], pi_sampler [0.5, 0.2, 0.8, 0.4] -> r = [1, 3, 0.25, 1.05]
# row 1: pi_old_trainer [0.3, .], pi_sampler [0.3, .], one real token      -> r = [1, pad]
OLD = torch.tensor([[0.5, 0.6, 0.2, 0.42], [0.3, 0.9, 0.9, 0.9]]).log()
SAMPLER = torch.tensor([[0.5, 0.2, 0.8, 0.4], [0.3, 0.5, 0.5, 0.5]]).log()
MASK = torch.tensor([[True, True, True, True], [True, False, False, False]])
ADV = torch.tensor([2.0, -1.0])


def test_mismatch_stats_by_hand():
    stats = mismatch_stats(OLD, SAMPLER, MASK)
    # real ratios 1, 3, 0.25, 1.05, 1: mean 6.3 / 5 = 1.26; outside [0.9, 1.1]: 3 and 0.25 -> 2 / 5
    assert stats["ratio_mean"] == pytest.approx(1.26, abs=1e-6)
    assert stats["outside_frac"] == pytest.approx(0.4)
    # the padded tokens (ratio 0.9 / 0.5 = 1.8) are not counted
    assert mismatch_stats(OLD, OLD, MASK) == {"ratio_mean": 1.0, "outside_frac": 0.0}


def test_tis_weights_each_token_by_the_capped_ratio():
    adv, mask, stats = TruncatedIS(cap=2.0)(ADV, MASK, OLD, SAMPLER)
    # w = min(r, 2) = [1, 2, 0.25, 1.05] on row 0 (A = 2), 1 on row 1 (A = -1)
    torch.testing.assert_close(adv[0], torch.tensor([2.0, 4.0, 0.5, 2.1]))
    assert adv[1, 0] == -1.0
    assert mask.equal(MASK)  # nothing leaves the loss
    assert stats["is_weight_mean"] == pytest.approx((1 + 2 + 0.25 + 1.05 + 1) / 5, abs=1e-6)  # 1.06
    assert stats["is_capped_frac"] == pytest.approx(1 / 5)  # the token of ratio 3


def test_tis_weights_the_policy_gradient_not_the_kl_term():
    """On-policy GRPO, beta = 0: d loss / d logp_t = -A_t w_t / |o|; with TIS the token of ratio 3 pulls 2x (the cap)."""
    adv, mask, _ = TruncatedIS(cap=2.0)(ADV[:1], MASK[:1], OLD[:1], SAMPLER[:1])
    logp = torch.zeros(1, 4, requires_grad=True)
    loss, _ = grpo_loss(logp, None, None, adv, mask, beta=0.0)
    # sequence aggregation, 4 tokens, A = 2: -2 w / 4 = -0.5 w, w = [1, 2, 0.25, 1.05]
    torch.testing.assert_close(torch.autograd.grad(loss, logp)[0], torch.tensor([[-0.5, -1.0, -0.125, -0.525]]))


def test_mis_masks_tokens_outside_the_band():
    adv, mask, stats = MaskedIS(cap=2.0)(ADV, MASK, OLD, SAMPLER)
    # band [1/2, 2]: ratios 3 and 0.25 leave the loss; 1, 1.05 and row 1's 1 stay
    assert mask.equal(torch.tensor([[True, False, False, True], [True, False, False, False]]))
    assert adv is ADV  # the rest unweighted
    assert stats["is_masked_frac"] == pytest.approx(0.4)
    # a cap of 4: band [0.25, 4] keeps every token (0.25 is on its edge)
    assert MaskedIS(cap=4.0)(ADV, MASK, OLD, SAMPLER)[1].equal(MASK)


def test_none_changes_nothing_and_caps_are_checked():
    adv, mask, stats = NoCorrection()(ADV, MASK, OLD, SAMPLER)
    assert adv is ADV and mask is MASK and stats == {}
    assert not NoCorrection.needs_old_logp and TruncatedIS.needs_old_logp and MaskedIS.needs_old_logp
    for cls in (TruncatedIS, MaskedIS):
        with pytest.raises(ValueError, match=r"grpo\.rollout_is_cap=1\.0: .* C > 1"):
            cls(cap=1.0)
    assert math.isfinite(TruncatedIS(cap=1.5).cap)
