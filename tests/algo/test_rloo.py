"""grpo.algo.rloo: the leave-one-out baseline, by hand."""

import pytest
import torch

from grpo.algo.rloo import RLOOAdvantages, rloo_advantages


def test_hand_worked():
    # group 0, rewards [1, 0, 0, 1]: the others' mean for output 0 is (0 + 0 + 1) / 3 = 1/3, so A_0 = 1 - 1/3 = 2/3;
    #   for output 1 it is (1 + 0 + 1) / 3 = 2/3, so A_1 = 0 - 2/3 = -2/3  (= G/(G-1) * (r - mean) = 4/3 * +-0.5)
    # group 1, rewards [0.5] * 4: no spread, exactly 0
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.5, 0.5])
    expected = torch.tensor([2 / 3, -2 / 3, -2 / 3, 2 / 3, 0.0, 0.0, 0.0, 0.0])
    torch.testing.assert_close(rloo_advantages(rewards, group_size=4), expected, rtol=0, atol=1e-7)
    assert torch.equal(rloo_advantages(rewards, 4)[4:], torch.zeros(4))  # exactly zero: the group is left out


def test_baseline_leaves_the_output_itself_out():
    # G = 2: each output is compared with the other one alone, A = r_i - r_j
    torch.testing.assert_close(rloo_advantages(torch.tensor([3.0, 1.0]), 2), torch.tensor([2.0, -2.0]))


def test_component_and_bad_inputs():
    estimator = RLOOAdvantages()
    assert estimator.needs_step_rewards is False
    torch.testing.assert_close(estimator(torch.tensor([1.0, 0.0]), 2), torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match="multiple of group_size"):
        rloo_advantages(torch.ones(5), 2)


def test_scaling_by_the_std_as_grpo():
    # rewards [1, 0, 0, 1]: A = [2/3, -2/3, -2/3, 2/3] (above); the group's sample std = sqrt((4 x 0.25) / 3) = 0.577350
    #   scale "group", eps 0.5: A / (0.577350 + 0.5) = +-0.666667 / 1.077350 = +-0.618802
    #   scale "batch" with a second group [1, 1, 1, 0] (A = [1/3, 1/3, 1/3, -1]): std of all 8 rewards = 0.517549,
    #   eps 0: group 0's A / 0.517549 = +-1.288122
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0])
    torch.testing.assert_close(rloo_advantages(rewards, 4, scale=True, eps=0.5), torch.tensor([0.618802, -0.618802, -0.618802, 0.618802]))
    both = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0])
    torch.testing.assert_close(rloo_advantages(both, 4, scale="batch", eps=0.0)[:4], torch.tensor([1.288122, -1.288122, -1.288122, 1.288122]))
    torch.testing.assert_close(rloo_advantages(rewards, 4, scale=False, eps=0.5), rloo_advantages(rewards, 4))  # eps only with scaling
    torch.testing.assert_close(RLOOAdvantages(scale="group", eps=0.5)(rewards, 4), rloo_advantages(rewards, 4, scale=True, eps=0.5))
    with pytest.raises(ValueError, match="scale_rewards='sometimes'"):
        RLOOAdvantages(scale="sometimes")


def test_min_spread_makes_a_narrow_group_flat():
    # group 1: [0.50, 0.52]: A = r_i - the other's = -0.02, +0.02; spread 0.02 < 0.05 -> flat (0, 0)
    # group 2: [0, 1]: spread 1 >= 0.05 -> A = -1, +1
    rewards = torch.tensor([0.50, 0.52, 0.0, 1.0])
    assert torch.allclose(rloo_advantages(rewards, 2), torch.tensor([-0.02, 0.02, -1.0, 1.0]), atol=1e-6)
    assert torch.allclose(rloo_advantages(rewards, 2, min_spread=0.05), torch.tensor([0.0, 0.0, -1.0, 1.0]))
    assert torch.equal(RLOOAdvantages(min_spread=0.05)(rewards, 2), rloo_advantages(rewards, 2, min_spread=0.05))
