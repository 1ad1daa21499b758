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
