"""grpo.algo.process_progress: step rewards as progress (value differences), by hand."""

import pytest
import torch

from grpo.algo.advantages import process_advantages
from grpo.algo.process_progress import ProcessProgressAdvantages, process_progress_advantages, step_progress


def steps(T, rows):
    """step_rewards, step_end_mask [len(rows), T] from {row: [(t, value), ...]}; unmarked entries hold garbage."""
    step_rewards = torch.full((len(rows), T), 99.0)
    step_end_mask = torch.zeros(len(rows), T, dtype=torch.bool)
    for i, row in enumerate(rows):
        for t, v in row:
            step_rewards[i, t], step_end_mask[i, t] = v, True
    return step_rewards, step_end_mask


def test_hand_worked():
    # G = 2, T = 4. row 0: values at t=0 (0.5), t=2 (0.9), t=3 (0.3); row 1: at t=1 (0.7), t=3 (0.7)
    # v_0 = mean first-step value = (0.5 + 0.7) / 2 = 0.6
    # progress: row 0: t=0: 0.5 - 0.6 = -0.1; t=2: 0.9 - 0.5 = 0.4; t=3: 0.3 - 0.9 = -0.6
    #           row 1: t=1: 0.7 - 0.6 = 0.1;  t=3: 0.7 - 0.7 = 0
    # scale=none, summed from t on (= final value - the value before t's step):
    #   row 0: t=0: -0.1 + 0.4 - 0.6 = -0.3 (0.3 - 0.6); t=1,2: 0.4 - 0.6 = -0.2 (0.3 - 0.5); t=3: -0.6 (0.3 - 0.9)
    #   row 1: t=0,1: 0.1 + 0 = 0.1 (0.7 - 0.6); t=2,3: 0
    step_rewards, step_end_mask = steps(4, [[(0, 0.5), (2, 0.9), (3, 0.3)], [(1, 0.7), (3, 0.7)]])
    want_progress = torch.tensor([[-0.1, 0.0, 0.4, -0.6], [0.0, 0.1, 0.0, 0.0]])
    torch.testing.assert_close(step_progress(step_rewards, step_end_mask, 2), want_progress, rtol=0, atol=1e-6)
    want_none = torch.tensor([[-0.3, -0.2, -0.2, -0.6], [0.1, 0.1, 0.0, 0.0]])
    adv = process_progress_advantages(step_rewards, step_end_mask, 2, scale="none")
    torch.testing.assert_close(adv, want_none, rtol=0, atol=1e-6)
    # group scale: P = {-0.1, 0.4, -0.6, 0.1, 0}, mean -0.04, squared deviations .0036 + .1936 + .3136 + .0196 + .0016
    #   = .532, Bessel var .532 / 4 = .133, std 0.364692 -> want_none / 0.364692 (not re-centred)
    torch.testing.assert_close(process_progress_advantages(step_rewards, step_end_mask, 2, eps=0.0), want_none / 0.133**0.5,
                               rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(process_progress_advantages(step_rewards, step_end_mask, 2), want_none / (0.133**0.5 + 1e-4),
                               rtol=1e-6, atol=1e-6)


def test_steps_that_keep_the_value_add_nothing_unlike_the_sum():
    # G = 2, T = 5: row 0 values 0.5 (t=1), 0.8 (t=2); row 1 the same, then two padding steps at 0.8 (t=3, t=4)
    # progress: v_0 = 0.5; both rows: 0 (t=1), 0.3 (t=2); row 1's padding: 0.8 - 0.8 = 0, twice
    # scale none: both rows' tokens up to t=2 get 0.3, row 1's padding tokens 0: the padding changes nothing
    # sum (process, scale none): R = {.5, .8, .5, .8, .8, .8}, mean .7: row 0's first token -.2 + .1 = -.1,
    #   row 1's -.2 + .1 + .1 + .1 = +.1: there the padding lifts the row
    step_rewards, step_end_mask = steps(5, [[(1, 0.5), (2, 0.8)], [(1, 0.5), (2, 0.8), (3, 0.8), (4, 0.8)]])
    adv = process_progress_advantages(step_rewards, step_end_mask, 2, scale="none")
    torch.testing.assert_close(adv, torch.tensor([[0.3, 0.3, 0.3, 0.0, 0.0], [0.3, 0.3, 0.3, 0.0, 0.0]]), rtol=0, atol=1e-6)
    total = process_advantages(step_rewards, step_end_mask, 2, scale="none")
    torch.testing.assert_close(total[:, 0], torch.tensor([-0.1, 0.1]), rtol=0, atol=1e-6)


def test_batch_scale_hand_worked():
    # G = 2, T = 2, one step per row at t=1: group 0 values [1, 0], group 1 [3, 3] (constant -> 0)
    # v_0: 0.5 and 3; progress [0.5, -0.5, 0, 0]; batch std (Bessel) of it: mean 0, squares .25 + .25 = .5, var .5 / 3,
    #   std 0.408248 -> group 0: [1.224745, -1.224745] on both tokens
    step_rewards, step_end_mask = steps(2, [[(1, 1.0)], [(1, 0.0)], [(1, 3.0)], [(1, 3.0)]])
    adv = process_progress_advantages(step_rewards, step_end_mask, 2, scale="batch", eps=0.0)
    a = 0.5 / (0.5 / 3) ** 0.5
    torch.testing.assert_close(adv, torch.tensor([[a, a], [-a, -a], [0.0, 0.0], [0.0, 0.0]]), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("eps", [1e-4, 0.0])
def test_flat_and_empty_groups_are_exactly_zero(eps):
    # group 0: every value 0.7; group 1: no step; group 2: a row without steps is not in v_0 (row 5 alone: v_0 = 0.2)
    step_rewards, step_end_mask = steps(3, [[(0, 0.7), (2, 0.7)], [(1, 0.7)], [], [], [], [(0, 0.2), (2, 0.9)]])
    adv = process_progress_advantages(step_rewards, step_end_mask, 2, eps=eps)
    assert torch.equal(adv[:5], torch.zeros(5, 3)) and not torch.isnan(adv).any()
    assert adv[5, 0] > 0 and adv[5, 1] == adv[5, 2] == adv[5, 0]  # only the second step's +0.7 progress


def test_component_and_bad_inputs():
    estimator = ProcessProgressAdvantages(scale="none")
    assert estimator.needs_step_rewards is True
    step_rewards, step_end_mask = steps(2, [[(1, 1.0)], [(1, 0.0)]])
    torch.testing.assert_close(estimator(None, 2, step_rewards, step_end_mask), torch.tensor([[0.5, 0.5], [-0.5, -0.5]]))
    with pytest.raises(ValueError, match="needs step_rewards"):
        estimator(torch.zeros(2), 2)
    with pytest.raises(ValueError, match="scale_rewards='foo'"):
        ProcessProgressAdvantages(scale="foo")
    with pytest.raises(ValueError, match=r"\[N, T\]"):
        process_progress_advantages(torch.zeros(4, 3), torch.zeros(4, 2, dtype=torch.bool), 2)


def test_the_option_computes_progress_advantages_not_the_sum():
    # two rows of values 0.2 -> 0.6 and 0.4 -> 0.4: the component (supervision=process_progress) gives the progress form
    step_rewards, step_end_mask = steps(4, [[(1, 0.2), (3, 0.6)], [(1, 0.4), (3, 0.4)]])
    got = ProcessProgressAdvantages(eps=0.0)(None, 2, step_rewards, step_end_mask)
    assert torch.equal(got, process_progress_advantages(step_rewards, step_end_mask, 2, eps=0.0))
    assert not torch.equal(got, process_advantages(step_rewards, step_end_mask, 2, eps=0.0))
