"""grpo.algo.advantages: hand-worked examples, edge cases, invariants."""

import pytest
import torch

from grpo.algo.advantages import outcome_advantages, process_advantages


# ----------------------------------------------------------------------------- outcome


def test_outcome_hand_worked():
    # group 0: r = [1, 0, 0, 0]; mean = 0.25; deviations [0.75, -0.25, -0.25, -0.25]
    #   sum of squares = 0.5625 + 3 * 0.0625 = 0.75; Bessel var = 0.75 / 3 = 0.25; std = 0.5
    #   A = deviation / (0.5 + 1e-4) = [1.4997..., -0.49990..., ...]
    # group 1: r = [3, 1, 2, 2]; mean = 2; deviations [1, -1, 0, 0]; var = 2 / 3; std = 0.81650
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 3.0, 1.0, 2.0, 2.0])
    std1 = (2.0 / 3.0) ** 0.5
    expected = torch.tensor([0.75, -0.25, -0.25, -0.25, 0, 0, 0, 0]) / 0.5001
    expected[4:] = torch.tensor([1.0, -1.0, 0.0, 0.0]) / (std1 + 1e-4)
    torch.testing.assert_close(outcome_advantages(rewards, 4), expected, rtol=1e-6, atol=1e-6)
    # eps = 0: exactly the z-score
    torch.testing.assert_close(
        outcome_advantages(rewards, 4, eps=0.0)[:4], torch.tensor([1.5, -0.5, -0.5, -0.5]), rtol=1e-6, atol=1e-6
    )


def test_outcome_unscaled_is_centered_only():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 3.0, 1.0, 2.0, 2.0])
    expected = torch.tensor([0.75, -0.25, -0.25, -0.25, 1.0, -1.0, 0.0, 0.0])
    torch.testing.assert_close(outcome_advantages(rewards, 4, scale=False), expected)


@pytest.mark.parametrize("eps", [1e-4, 0.0])
@pytest.mark.parametrize("scale", [True, False])
def test_outcome_constant_group_is_exactly_zero(eps, scale):
    rewards = torch.tensor([0.1, 0.1, 0.1, 0.7, 0.2, 0.7])  # group 0 constant, group 1 not
    adv = outcome_advantages(rewards, 3, scale=scale, eps=eps)
    assert torch.equal(adv[:3], torch.zeros(3))
    assert not torch.isnan(adv).any()
    assert adv[3:].abs().sum() > 0


def test_outcome_bf16_input_gives_float32():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.bfloat16)
    adv = outcome_advantages(rewards, 4, eps=0.0)
    assert adv.dtype == torch.float32
    torch.testing.assert_close(adv, torch.tensor([1.5, -0.5, -0.5, -0.5]))


@pytest.mark.parametrize("seed", range(5))
def test_outcome_invariants(seed):
    g = torch.Generator().manual_seed(seed)
    group_size = 8
    rewards = torch.randn(6 * group_size, generator=g)
    scaled = outcome_advantages(rewards, group_size, eps=0.0).view(-1, group_size)
    centered = outcome_advantages(rewards, group_size, scale=False).view(-1, group_size)
    # each group's advantages sum to 0; with eps = 0 the scaled ones have Bessel std 1
    torch.testing.assert_close(scaled.sum(1), torch.zeros(6), atol=1e-5, rtol=0)
    torch.testing.assert_close(scaled.std(1), torch.ones(6), atol=1e-5, rtol=0)
    torch.testing.assert_close(centered.sum(1), torch.zeros(6), atol=1e-5, rtol=0)
    # order within a group is preserved; adding a constant to a group changes nothing
    assert torch.equal(scaled.argsort(1), rewards.view(-1, group_size).argsort(1))
    torch.testing.assert_close(outcome_advantages(rewards + 5.0, group_size, eps=0.0).view(-1, group_size), scaled,
                               atol=1e-5, rtol=0)


def test_outcome_bad_inputs():
    with pytest.raises(ValueError, match="not divisible by group_size"):
        outcome_advantages(torch.zeros(7), 4)
    with pytest.raises(ValueError, match="group_size must be >= 2"):
        outcome_advantages(torch.zeros(4), 1)
    with pytest.raises(ValueError, match="1-D"):
        outcome_advantages(torch.zeros(4, 2), 2)
    with pytest.raises(ValueError, match="eps"):
        outcome_advantages(torch.zeros(4), 2, eps=-1.0)


# ----------------------------------------------------------------------------- process


def _hand_example():
    """Two groups of group_size 2, T = 4. Unmarked entries hold garbage (they must be ignored).

    group 0: row 0 has steps ending at t=1 (r=1.0) and t=3 (r=0.5); row 1 one step at t=2 (r=0.0)
    group 1: row 2 one step at t=0 (r=0.3); row 3 has no step at all
    """
    garbage = 123.0
    step_rewards = torch.full((4, 4), garbage)
    step_end_mask = torch.zeros(4, 4, dtype=torch.bool)
    for row, t, r in [(0, 1, 1.0), (0, 3, 0.5), (1, 2, 0.0), (2, 0, 0.3)]:
        step_rewards[row, t] = r
        step_end_mask[row, t] = True
    return step_rewards, step_end_mask


def test_process_hand_worked():
    step_rewards, step_end_mask = _hand_example()
    # group 0: R = {1.0, 0.5, 0.0}; mean = 0.5; deviations {0.5, 0, -0.5}
    #   Bessel var = (0.25 + 0 + 0.25) / 2 = 0.25; std = 0.5
    #   eps = 0:    normalised = {1, 0, -1}
    #   row 0: A[t] = sum of its normalised steps ending at >= t:
    #          t=0: 1 + 0 = 1; t=1: 1 + 0 = 1; t=2: 0; t=3: 0
    #   row 1: t=0..2: -1; t=3: 0 (after its last step)
    # group 1: a single step reward -> std 0, r - mean = 0 -> all zeros
    expected = torch.tensor(
        [
            [1.0, 1.0, 0.0, 0.0],
            [-1.0, -1.0, -1.0, 0.0],
            [0.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 0.0],
        ]
    )
    adv = process_advantages(step_rewards, step_end_mask, 2, eps=0.0)
    torch.testing.assert_close(adv, expected, rtol=1e-6, atol=1e-6)
    assert torch.equal(adv[2:], torch.zeros(2, 4))
    # default eps = 1e-4: normalised = {0.5, 0, -0.5} / 0.5001
    torch.testing.assert_close(process_advantages(step_rewards, step_end_mask, 2), expected * 0.5 / 0.5001,
                               rtol=1e-6, atol=1e-6)


def test_process_unscaled_is_centered_only():
    # scale=False (Dr. GRPO, grpo.scale_rewards=false): group 0's deviations {0.5, 0, -0.5} are not divided by the std,
    # so row 0 gets 0.5 + 0 then 0, row 1 gets -0.5 (this setting used to be ignored under process supervision)
    step_rewards, step_end_mask = _hand_example()
    adv = process_advantages(step_rewards, step_end_mask, 2, scale=False)
    expected = torch.tensor([[0.5, 0.5, 0.0, 0.0], [-0.5, -0.5, -0.5, 0.0], [0.0] * 4, [0.0] * 4])
    torch.testing.assert_close(adv, expected, rtol=0, atol=1e-7)


def test_process_group_without_steps_is_zero():
    step_rewards = torch.randn(4, 5)
    step_end_mask = torch.zeros(4, 5, dtype=torch.bool)
    step_end_mask[0, 2] = step_end_mask[1, 4] = True  # group 0 has steps, group 1 none
    adv = process_advantages(step_rewards, step_end_mask, 2)
    assert torch.equal(adv[2:], torch.zeros(2, 5))


@pytest.mark.parametrize("eps", [1e-4, 0.0])
def test_process_constant_group_is_exactly_zero(eps):
    step_rewards = torch.full((2, 3), 0.1)
    step_end_mask = torch.tensor([[True, False, True], [False, True, False]])
    adv = process_advantages(step_rewards, step_end_mask, 2, eps=eps)
    assert torch.equal(adv, torch.zeros(2, 3))


@pytest.mark.parametrize("seed", range(5))
def test_process_invariants(seed):
    g = torch.Generator().manual_seed(seed)
    group_size, n_groups, T = 4, 3, 7
    step_rewards = torch.randn(group_size * n_groups, T, generator=g)
    step_end_mask = torch.rand(group_size * n_groups, T, generator=g) < 0.4
    step_end_mask[:, -1] = True  # at least one step per row
    adv = process_advantages(step_rewards, step_end_mask, group_size, eps=0.0)
    # A[i, t] - A[i, t+1] is the normalised reward of a step ending at t: zero where no step ends
    normalised = adv - torch.cat([adv[:, 1:], torch.zeros(adv.shape[0], 1)], dim=1)
    assert torch.equal(normalised[~step_end_mask], torch.zeros(int((~step_end_mask).sum())))
    # normalised step rewards of a group have mean 0 and Bessel std 1, so A[:, 0] sums to 0 per group
    for group in range(n_groups):
        rows = slice(group * group_size, (group + 1) * group_size)
        steps = normalised[rows][step_end_mask[rows]]
        torch.testing.assert_close(steps.mean(), torch.tensor(0.0), atol=1e-5, rtol=0)
        torch.testing.assert_close(steps.std(), torch.tensor(1.0), atol=1e-5, rtol=0)
    torch.testing.assert_close(adv[:, 0].view(n_groups, group_size).sum(1), torch.zeros(n_groups), atol=1e-5, rtol=0)
    # the garbage in unmarked entries is ignored
    noisy = torch.where(step_end_mask, step_rewards, torch.full_like(step_rewards, 1e6))
    assert torch.equal(process_advantages(noisy, step_end_mask, group_size, eps=0.0), adv)


def test_process_bad_inputs():
    with pytest.raises(ValueError, match=r"\[N, T\]"):
        process_advantages(torch.zeros(4, 3), torch.zeros(4, 2, dtype=torch.bool), 2)
    with pytest.raises(ValueError, match="not divisible by group_size"):
        process_advantages(torch.zeros(3, 2), torch.zeros(3, 2, dtype=torch.bool), 2)
    with pytest.raises(ValueError, match="group_size must be >= 2"):
        process_advantages(torch.zeros(3, 2), torch.zeros(3, 2, dtype=torch.bool), 1)


# ----------------------------------------------------------------------------- scale_rewards=batch


def test_outcome_batch_scale_hand_worked():
    # G = 2, groups [1, 0] and [2, 0]: group means 0.5 and 1 -> centred [0.5, -0.5, 1, -1]
    # batch std (Bessel) of [1, 0, 2, 0]: mean 0.75, squares 0.0625 + 0.5625 + 1.5625 + 0.5625 = 2.75,
    #   var = 2.75 / 3 = 0.916667, std = 0.957427 -> A = centred / 0.957427 = [0.522233, -0.522233, 1.044466, -1.044466]
    rewards = torch.tensor([1.0, 0.0, 2.0, 0.0])
    want = torch.tensor([0.522233, -0.522233, 1.044466, -1.044466])
    torch.testing.assert_close(outcome_advantages(rewards, 2, scale="batch", eps=0.0), want, rtol=1e-5, atol=1e-6)
    # with a group's std instead: each group's std is 0.707107 and 1.414214 -> [0.707107, -0.707107, 0.707107, -0.707107]
    torch.testing.assert_close(outcome_advantages(rewards, 2, scale="group", eps=0.0), torch.full((4,), 0.707107) * torch.tensor([1, -1, 1, -1]),
                               rtol=1e-5, atol=1e-6)
    # the spellings: True = "group", False = "none"
    assert torch.equal(outcome_advantages(rewards, 2, scale=True), outcome_advantages(rewards, 2, scale="group"))
    assert torch.equal(outcome_advantages(rewards, 2, scale=False), outcome_advantages(rewards, 2, scale="none"))
    # a constant group stays exactly 0 under batch scaling
    adv = outcome_advantages(torch.tensor([1.0, 1.0, 2.0, 0.0]), 2, scale="batch")
    assert torch.equal(adv[:2], torch.zeros(2))


def test_process_batch_scale_hand_worked():
    # G = 2, T = 2, one step reward per row at token 1: group 0 [1, 0], group 1 [3, 3] (constant -> 0)
    # group 0: mean 0.5, centred [0.5, -0.5]; batch std of the marked step rewards [1, 0, 3, 3]:
    #   mean 1.75, squares 0.5625 + 3.0625 + 1.5625 + 1.5625 = 6.75, var 2.25, std 1.5 -> [1/3, -1/3]
    step_rewards = torch.tensor([[0.0, 1.0], [0.0, 0.0], [0.0, 3.0], [0.0, 3.0]])
    mask = torch.tensor([[False, True]] * 4)
    adv = process_advantages(step_rewards, mask, 2, scale="batch", eps=0.0)
    want = torch.tensor([[1 / 3, 1 / 3], [-1 / 3, -1 / 3], [0.0, 0.0], [0.0, 0.0]])  # summed from t on: both tokens
    torch.testing.assert_close(adv, want)


def test_unknown_scale_is_refused():
    with pytest.raises(ValueError, match=r"scale_rewards='foo' is not known.*'group', 'batch', 'none'"):
        outcome_advantages(torch.tensor([1.0, 0.0]), 2, scale="foo")
    from grpo.algo.advantages import OutcomeAdvantages, ProcessAdvantages

    for cls in (OutcomeAdvantages, ProcessAdvantages):
        with pytest.raises(ValueError, match="scale_rewards='foo'"):
            cls(scale="foo")
