"""grpo.algo.process_min: PURE's min-form credit assignment, by hand."""

import pytest
import torch

from grpo.algo.advantages import outcome_advantages, process_advantages
from grpo.algo.process_min import ProcessMinAdvantages, process_min_advantages


def steps(T, rows):
    """step_rewards, step_end_mask [len(rows), T] from {row: [(t, r), ...]}; unmarked entries hold garbage."""
    step_rewards = torch.full((len(rows), T), 99.0)
    step_end_mask = torch.zeros(len(rows), T, dtype=torch.bool)
    for i, row in enumerate(rows):
        for t, r in row:
            step_rewards[i, t], step_end_mask[i, t] = r, True
    return step_rewards, step_end_mask


def test_hand_worked():
    # G = 2, T = 5. row 0: steps end at t=1 (0.8), t=3 (0.2), t=4 (0.6); row 1: at t=0 (1.0), t=2 (0.6)
    # returns G_it = min of the rewards of the steps ending at or after t:
    #   row 0: t=0..3: min(0.8, 0.2, 0.6) = 0.2 (t=2,3: min(0.2, 0.6) = 0.2); t=4: 0.6
    #   row 1: t=0..2: min(1.0, 0.6) = 0.6; t=3,4: after its last step -> 0
    # baseline b = mean of the rows' returns G_i0 = (0.2 + 0.6) / 2 = 0.4
    # std of the returns at every step end {0.2, 0.2, 0.6, 0.6, 0.6}: mean 0.44, squared deviations
    #   2 * 0.0576 + 3 * 0.0256 = 0.192, Bessel var 0.192 / 4 = 0.048, std = 0.219089
    # A: row 0: (0.2 - 0.4) / 0.219089 = -0.912871 (t=0..3), (0.6 - 0.4) / 0.219089 = +0.912871 (t=4)
    #    row 1: (0.6 - 0.4) / 0.219089 = +0.912871 (t=0..2), 0 (t=3,4)
    step_rewards, step_end_mask = steps(5, [[(1, 0.8), (3, 0.2), (4, 0.6)], [(0, 1.0), (2, 0.6)]])
    a = 0.2 / 0.048**0.5
    want = torch.tensor([[-a, -a, -a, -a, a], [a, a, a, 0.0, 0.0]])
    torch.testing.assert_close(process_min_advantages(step_rewards, step_end_mask, 2, eps=0.0), want, rtol=1e-6, atol=1e-6)
    # scale=none: G_it - b only
    want_none = torch.tensor([[-0.2, -0.2, -0.2, -0.2, 0.2], [0.2, 0.2, 0.2, 0.0, 0.0]])
    torch.testing.assert_close(process_min_advantages(step_rewards, step_end_mask, 2, scale="none"), want_none,
                               rtol=0, atol=1e-6)
    # the default eps = 1e-4 is added to the std
    torch.testing.assert_close(process_min_advantages(step_rewards, step_end_mask, 2), want_none / (0.048**0.5 + 1e-4),
                               rtol=1e-6, atol=1e-6)


def test_padding_steps_do_not_raise_a_row_as_they_do_under_the_sum():
    # G = 2, T = 6: both rows have steps at t=1 (0.5) and t=3 (0.9); row 1 adds two padding steps the PRM
    # likes, at t=4 and t=5 (1.0 each)
    # sum (process, eps=0): R = {0.5, 0.9, 0.5, 0.9, 1, 1}, mean 0.8, squared deviations .09+.01+.09+.01+.04+.04 = .28,
    #   var .28 / 5 = .056, std 0.236643: row 0's first token (-0.3 + 0.1) / std = -0.845154,
    #   row 1's (-0.3 + 0.1 + 0.2 + 0.2) / std = +0.845154: the padding lifts the same solution above its twin
    # min: both rows' return is min(0.5, ...) = 0.5 = the baseline: first token 0 for both; up to t=3 the rows are
    #   identical ((0.9 - 0.5) / std at t=2,3, the same std as R's since every return here is a step's own reward)
    step_rewards, step_end_mask = steps(6, [[(1, 0.5), (3, 0.9)], [(1, 0.5), (3, 0.9), (4, 1.0), (5, 1.0)]])
    total = process_advantages(step_rewards, step_end_mask, 2, eps=0.0)
    std = 0.056**0.5
    torch.testing.assert_close(total[:, 0], torch.tensor([-0.2 / std, 0.2 / std]), rtol=1e-6, atol=1e-6)
    pure = process_min_advantages(step_rewards, step_end_mask, 2, eps=0.0)
    assert torch.equal(pure[:, 0], torch.zeros(2))
    torch.testing.assert_close(pure[0, :4], pure[1, :4], rtol=0, atol=0)
    torch.testing.assert_close(pure[0], torch.tensor([0.0, 0.0, 0.4 / std, 0.4 / std, 0.0, 0.0]), rtol=1e-6, atol=1e-6)
    # a bad step anywhere sets the row's return: a padding step scoring 0.1 drags row 1's first token down
    worse, mask = steps(6, [[(1, 0.5), (3, 0.9)], [(1, 0.5), (3, 0.9), (4, 0.1), (5, 1.0)]])
    assert process_min_advantages(worse, mask, 2)[1, 0] < 0 < process_min_advantages(worse, mask, 2)[0, 0]


def test_rows_sharing_their_worst_step_stay_finite():
    # row 0: [0 then 1], row 1: [0 then 0] (T = 2): both returns G_i0 = 0 = b, so the rows' std is 0; the returns at
    # the step ends {0, 1, 0, 0} have mean .25 and var (3 * .0625 + .5625) / 3 = .25, std .5: row 0's second token
    # gets (1 - 0) / (.5 + 1e-4), the rest 0
    step_rewards, step_end_mask = steps(2, [[(0, 0.0), (1, 1.0)], [(0, 0.0), (1, 0.0)]])
    want = torch.tensor([[0.0, 1 / 0.5001], [0.0, 0.0]])
    torch.testing.assert_close(process_min_advantages(step_rewards, step_end_mask, 2), want, rtol=1e-6, atol=1e-6)


def test_one_step_per_row_is_the_outcome_advantage():
    # with a single step per row at its last token the min-form return is that reward: the outcome advantage
    g = torch.Generator().manual_seed(0)
    rewards = torch.rand(12, generator=g)
    step_rewards, step_end_mask = torch.zeros(12, 3), torch.zeros(12, 3, dtype=torch.bool)
    step_rewards[:, 2], step_end_mask[:, 2] = rewards, True
    adv = process_min_advantages(step_rewards, step_end_mask, 4)
    torch.testing.assert_close(adv, outcome_advantages(rewards, 4)[:, None].expand(12, 3), rtol=1e-5, atol=1e-6)


def test_batch_scale_hand_worked():
    # G = 2, T = 2, one step per row at t=1: group 0 [1, 0], group 1 [3, 3] (constant -> 0)
    # group 0: b = 0.5, returns - b = [0.5, -0.5]; batch std of every step-end return {1, 0, 3, 3}: mean 1.75,
    #   squares 0.5625 + 3.0625 + 1.5625 + 1.5625 = 6.75, var 2.25, std 1.5 -> [1/3, -1/3] on both tokens
    step_rewards, step_end_mask = steps(2, [[(1, 1.0)], [(1, 0.0)], [(1, 3.0)], [(1, 3.0)]])
    adv = process_min_advantages(step_rewards, step_end_mask, 2, scale="batch", eps=0.0)
    want = torch.tensor([[1 / 3, 1 / 3], [-1 / 3, -1 / 3], [0.0, 0.0], [0.0, 0.0]])
    torch.testing.assert_close(adv, want)


@pytest.mark.parametrize("eps", [1e-4, 0.0])
def test_flat_and_empty_groups_are_exactly_zero(eps):
    # group 0: every step reward 0.7 (rows of different lengths); group 1: no step at all; group 2: a row without steps
    # is left out of the baseline: row 5 alone -> b = its own return, A = 0 at its first token, and the empty row 4 is 0
    step_rewards, step_end_mask = steps(3, [[(0, 0.7), (2, 0.7)], [(1, 0.7)], [], [], [], [(0, 0.2), (2, 0.9)]])
    adv = process_min_advantages(step_rewards, step_end_mask, 2, eps=eps)
    assert torch.equal(adv[:5], torch.zeros(5, 3)) and not torch.isnan(adv).any()
    assert adv[5, 0] == 0 and adv[5, 2] > 0


def test_component_and_bad_inputs():
    estimator = ProcessMinAdvantages(scale="batch", eps=0.0)
    assert estimator.needs_step_rewards is True
    step_rewards, step_end_mask = steps(2, [[(1, 1.0)], [(1, 0.0)], [(1, 3.0)], [(1, 3.0)]])
    assert torch.equal(estimator(None, 2, step_rewards, step_end_mask),
                       process_min_advantages(step_rewards, step_end_mask, 2, scale="batch", eps=0.0))
    with pytest.raises(ValueError, match="needs step_rewards"):
        estimator(torch.zeros(4), 2)
    with pytest.raises(ValueError, match="scale_rewards='foo'"):
        ProcessMinAdvantages(scale="foo")
    with pytest.raises(ValueError, match=r"\[N, T\]"):
        process_min_advantages(torch.zeros(4, 3), torch.zeros(4, 2, dtype=torch.bool), 2)
    with pytest.raises(ValueError, match="not divisible by group_size"):
        process_min_advantages(torch.zeros(3, 2), torch.zeros(3, 2, dtype=torch.bool), 2)


def test_the_option_computes_min_form_advantages_not_the_sum():
    # the padding example above: the component (supervision=process_min) gives the min-form advantages
    step_rewards, step_end_mask = steps(6, [[(1, 0.5), (3, 0.9)], [(1, 0.5), (3, 0.9), (4, 1.0), (5, 1.0)]])
    got = ProcessMinAdvantages(eps=0.0)(None, 2, step_rewards, step_end_mask)
    assert torch.equal(got, process_min_advantages(step_rewards, step_end_mask, 2, eps=0.0))
    assert not torch.equal(got, process_advantages(step_rewards, step_end_mask, 2, eps=0.0))


def test_outcome_is_a_term_of_its_own():
    # reward=prm_verifier under process_min: the verifier's outcome o_i is added to every return of row i, not put on
    # the last step (where the min would drop it). G = 2, T = 4, scale none.
    #   row 0: steps at t=1 (0.2), t=3 (0.9), o = 1: G = min + o: t=0,1: 0.2 + 1 = 1.2; t=2,3: 0.9 + 1 = 1.9
    #   row 1: steps at t=1 (0.8), t=3 (0.6), o = 0: t=0..3: 0.6
    #   b = (1.2 + 0.6) / 2 = 0.9 -> row 0: 0.3, 0.3, 1.0, 1.0; row 1: -0.3 x 4
    # with o on the last step instead: row 0's steps 0.2, 1.9 -> min 0.2 at t=0,1: the verifier's 1 is lost there
    step_rewards, step_end_mask = steps(4, [[(1, 0.2), (3, 0.9)], [(1, 0.8), (3, 0.6)]])
    outcome = torch.tensor([1.0, 0.0])
    got = process_min_advantages(step_rewards, step_end_mask, 2, scale="none", outcome=outcome)
    torch.testing.assert_close(got, torch.tensor([[0.3, 0.3, 1.0, 1.0], [-0.3, -0.3, -0.3, -0.3]]), rtol=0, atol=1e-6)
    # through the estimator (the rollout passes outcome= when the estimator says outcome_apart)
    assert ProcessMinAdvantages.outcome_apart
    est = ProcessMinAdvantages(scale="none")
    torch.testing.assert_close(est(None, 2, step_rewards, step_end_mask, outcome=outcome), got)


def test_a_group_is_flat_only_if_its_outcomes_are_equal_too():
    # equal step rewards in both rows: flat without an outcome; different outcomes give it a signal
    step_rewards, step_end_mask = steps(2, [[(1, 0.5)], [(1, 0.5)]])
    assert torch.equal(process_min_advantages(step_rewards, step_end_mask, 2), torch.zeros(2, 2))
    got = process_min_advantages(step_rewards, step_end_mask, 2, scale="none", outcome=torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(got, torch.tensor([[0.5, 0.5], [-0.5, -0.5]]), rtol=0, atol=1e-6)
    same = process_min_advantages(step_rewards, step_end_mask, 2, outcome=torch.tensor([1.0, 1.0]))
    assert torch.equal(same, torch.zeros(2, 2))


def test_decoupled_outcome_gets_its_own_grpo_advantage():
    # advantage.outcome_scale=group (PRIME / GDPO): A = w_s * A^min(steps alone) + w_o * GRPO's outcome advantage.
    # G = 2, T = 4, two groups. Steps (scale "none" for the hand sums):
    #   group 0: row 0 steps 0.2 (t=1), 0.9 (t=3); row 1 steps 0.8 (t=1), 0.6 (t=3); outcomes 1, 0
    #     min-form returns: row 0: 0.2, 0.2, 0.9, 0.9; row 1: 0.6 x 4; b = (0.2 + 0.6) / 2 = 0.4
    #     A^min: row 0: -0.2, -0.2, 0.5, 0.5; row 1: 0.2 x 4
    #     outcome advantage (group std): o = (1, 0): mean 0.5, std (Bessel) 0.707107 -> +0.707107, -0.707107
    #   group 1: both rows one step 0.5 at t=3 (flat steps: A^min = 0); outcomes 1, 1 (flat): 0
    # with outcome weight 2 (the outcome arrives weighted: 2, 0) the std division cancels it and it is put back:
    #   row 0: -0.2 + 2 * 0.707107 = 1.214214 (t=0,1), 0.5 + 1.414214 = 1.914214 (t=2,3); row 1: 0.2 - 1.414214
    step_rewards, step_end_mask = steps(4, [[(1, 0.2), (3, 0.9)], [(1, 0.8), (3, 0.6)], [(3, 0.5)], [(3, 0.5)]])
    outcome = torch.tensor([2.0, 0.0, 2.0, 2.0])
    got = process_min_advantages(step_rewards, step_end_mask, 2, scale="none", eps=0.0, outcome=outcome,
                                 outcome_scale="group", weights=(1.0, 2.0))
    want = torch.tensor([[1.214214, 1.214214, 1.914214, 1.914214], [-1.214214] * 4, [0.0] * 4, [0.0] * 4])
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    # unscaled, the weight is already in the outcome: 2 - 1 = +1 / -1, not multiplied again
    none = process_min_advantages(step_rewards, step_end_mask, 2, scale="none", eps=0.0, outcome=outcome,
                                  outcome_scale="none", weights=(1.0, 2.0))
    torch.testing.assert_close(none[:2], torch.tensor([[0.8, 0.8, 1.5, 1.5], [-0.8] * 4]), rtol=0, atol=1e-6)
    # joint (outcome_scale None) is a different estimator: the outcome inside the min-form return, one baseline
    joint = process_min_advantages(step_rewards, step_end_mask, 2, scale="none", eps=0.0, outcome=outcome)
    assert not torch.allclose(joint, got)
    # through the estimator, as the rollout calls it (weights from the reward's components)
    est = ProcessMinAdvantages(scale="none", eps=0.0, outcome_scale="group")
    torch.testing.assert_close(est(None, 2, step_rewards, step_end_mask, outcome=outcome, weights=(1.0, 2.0)), got)


def test_decoupled_steps_term_keeps_its_weight_under_a_std():
    # scale="batch" divides the step rewards' returns by their std, which cancels the PRM's weight w_s; it is put back:
    # the PRM weighted 3 (its rewards arrive x3) gives 3 x the advantage of the PRM weighted 1.
    step_rewards, step_end_mask = steps(4, [[(1, 0.2), (3, 0.9)], [(1, 0.8), (3, 0.6)]])
    outcome = torch.tensor([1.0, 1.0])  # flat: only the PRM's term
    one = process_min_advantages(step_rewards, step_end_mask, 2, scale="batch", eps=0.0, outcome=outcome, outcome_scale="group",
                                 weights=(1.0, 1.0))
    three = process_min_advantages(3 * step_rewards, step_end_mask, 2, scale="batch", eps=0.0, outcome=outcome,
                                   outcome_scale="group", weights=(3.0, 1.0))
    assert one.abs().sum() > 0
    torch.testing.assert_close(three, 3 * one, rtol=1e-4, atol=1e-5)


def test_decoupled_needs_an_outcome_and_a_known_scale():
    step_rewards, step_end_mask = steps(2, [[(1, 0.5)], [(1, 0.2)]])
    with pytest.raises(ValueError, match=r"advantage.outcome_scale='group'.*reward=prm_verifier"):
        ProcessMinAdvantages(outcome_scale="group")(None, 2, step_rewards, step_end_mask)
    with pytest.raises(ValueError, match=r"scale_rewards='per_token' is not known"):
        ProcessMinAdvantages(outcome_scale="per_token")
