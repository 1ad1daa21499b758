"""grpo.algo.passk: pass@k advantages for binary rewards, by hand."""

import pytest
import torch

from grpo.algo.advantages import outcome_advantages
from grpo.algo.passk import PassKAdvantages, passk_advantages


def test_hand_worked_groups():
    # G = 4, k = 2; C(4, 2) = 6, C(3, 1) = 3
    # [1, 0, 0, 0]: N_neg = 3, R = 1 - C(3,2)/6 = 1 - 3/6 = 0.5, sigma = sqrt(0.5 * 0.5) = 0.5
    #   A_pos = 0.5 / 0.5 = 1;  A_neg = (0.5 - C(2,1)/C(3,1)) / 0.5 = (0.5 - 2/3) / 0.5 = -1/3
    # [1, 1, 0, 0]: N_neg = 2, R = 1 - C(2,2)/6 = 5/6, sigma = sqrt(5/6 * 1/6) = 0.372678
    #   A_pos = (1/6) / 0.372678 = 0.447214;  A_neg = (1/6 - C(1,1)/3) / 0.372678 = -0.447214
    # [1, 1, 1, 0]: N_neg = 1 < k: every pair holds a right answer, R = 1, sigma = 0: all 0
    # [0, 0, 0, 0]: R = 0, sigma = 0: all 0
    rewards = torch.tensor([1.0, 0, 0, 0, 1, 1, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0])
    expected = torch.tensor([1, -1 / 3, -1 / 3, -1 / 3, 0.447214, 0.447214, -0.447214, -0.447214, 0, 0, 0, 0, 0, 0, 0, 0])
    torch.testing.assert_close(PassKAdvantages(k=2)(rewards, 4), expected, atol=1e-6, rtol=0)


def test_k1_is_grpo_with_the_population_std():
    # k = 1: R = N_pos / N, sigma the population std, A_pos = (1 - R)/sigma, A_neg = -R/sigma: (r - mean) / std
    rewards = torch.tensor([1.0, 0, 0, 1, 1, 1, 0, 1])
    r = rewards.view(2, 4)
    expected = ((r - r.mean(1, keepdim=True)) / r.std(1, unbiased=False, keepdim=True)).view(-1)
    torch.testing.assert_close(passk_advantages(rewards, 4, k=1), expected)
    assert not torch.allclose(passk_advantages(rewards, 4, k=2), outcome_advantages(rewards, 4))


def test_min_spread_flattens():
    assert passk_advantages(torch.tensor([1.0, 0, 0, 0]), 4, k=2, min_spread=1.5).eq(0).all()


def test_bad_inputs():
    with pytest.raises(ValueError, match="binary rewards"):
        passk_advantages(torch.tensor([0.5, 0, 1, 0]), 4, k=2)
    with pytest.raises(ValueError, match="advantage.k"):
        passk_advantages(torch.tensor([1.0, 0, 1, 0]), 4, k=4)  # k = G: every group would be flat
