"""grpo.min_spread: a group whose rewards span less than the threshold is flat (advantage exactly 0), for every
estimator of conf/supervision/ that reads it; 0 (the default) leaves today's numbers."""

import pytest
import torch
from hydra.utils import instantiate

from grpo.algo.advantages import OutcomeAdvantages, ProcessAdvantages, outcome_advantages
from grpo.algo.process_min import ProcessMinAdvantages
from grpo.algo.process_progress import ProcessProgressAdvantages
from grpo_testkit import compose_config

PROCESS = [ProcessAdvantages, ProcessMinAdvantages, ProcessProgressAdvantages]


def test_outcome_hand_worked():
    # group 0: [0.5, 0.5, 0.625, 0.5], a learned reward's noise: mean 0.53125, deviations [-1, -1, 3, -1] / 32,
    #   squares (3 + 9) / 1024 = 0.01171875, Bessel var 0.00390625, std 0.0625 -> A = [-0.5, -0.5, 1.5, -0.5]:
    #   a spread of 0.125 becomes full-size advantages. Its spread (max - min) is 0.125.
    # group 1: [1, 0, 0, 0], spread 1: A = [1.5, -0.5, -0.5, -0.5] whatever the threshold below 1
    rewards = torch.tensor([0.5, 0.5, 0.625, 0.5, 1.0, 0.0, 0.0, 0.0])
    want = torch.tensor([-0.5, -0.5, 1.5, -0.5, 1.5, -0.5, -0.5, -0.5])
    torch.testing.assert_close(outcome_advantages(rewards, 4, eps=0.0), want)  # default 0: as before
    torch.testing.assert_close(outcome_advantages(rewards, 4, eps=0.0, min_spread=0.125), want)  # not less than 0.125
    flat = outcome_advantages(rewards, 4, eps=0.0, min_spread=0.25)  # 0.125 < 0.25: group 0 is flat
    assert torch.equal(flat[:4], torch.zeros(4))
    torch.testing.assert_close(flat[4:], want[4:])
    # the estimator passes it on, and so for batch scaling (group 1 keeps its numbers' sign, group 0 is 0)
    batch = OutcomeAdvantages(scale="batch", eps=0.0, min_spread=0.25)(rewards, 4)
    assert torch.equal(batch[:4], torch.zeros(4)) and (batch[4:].sign() == want[4:].sign()).all()


@pytest.mark.parametrize("estimator", PROCESS)
@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_process_hand_worked(estimator, scale):
    # G = 2, T = 2. group 0: row 0 steps 0.5 (t=0), 0.625 (t=1); row 1 a step 0.5 (t=1): all its step rewards span
    #   0.625 - 0.5 = 0.125. group 1: row 2 a step 1.0 (t=1), row 3 a step 0.0 (t=1): spread 1.
    # min_spread 0.25: group 0 is flat (exactly 0 on every token), group 1 is as with min_spread 0;
    # min_spread 0.125: nothing is flat (0.125 is not less than 0.125), group 0 carries a signal
    step_rewards = torch.tensor([[0.5, 0.625], [0.0, 0.5], [0.0, 1.0], [0.0, 0.0]])
    step_end_mask = torch.tensor([[True, True], [False, True], [False, True], [False, True]])
    base = estimator(scale=scale, eps=1e-4)(None, 2, step_rewards, step_end_mask)
    flat = estimator(scale=scale, eps=1e-4, min_spread=0.25)(None, 2, step_rewards, step_end_mask)
    kept = estimator(scale=scale, eps=1e-4, min_spread=0.125)(None, 2, step_rewards, step_end_mask)
    assert (base[:2] != 0).any() and torch.equal(kept, base)
    assert torch.equal(flat[:2], torch.zeros(2, 2))
    if scale != "batch":  # batch scaling: group 0's rewards still count in the batch's std, as under outcome
        torch.testing.assert_close(flat[2:], base[2:], rtol=0, atol=0)
    assert (flat[2:] != 0).all()


@pytest.mark.parametrize("estimator", [OutcomeAdvantages, *PROCESS])
def test_a_negative_threshold_is_refused(estimator):
    with pytest.raises(ValueError, match="grpo.min_spread must be >= 0"):
        estimator(min_spread=-0.1)


@pytest.mark.parametrize("supervision", ["outcome", "process", "process_min", "process_progress"])
def test_the_setting_reaches_every_estimator(supervision, tmp_path):
    cfg = compose_config([f"supervision={supervision}", "grpo.min_spread=0.3", "grpo.scale_rewards=batch",
                          "grpo.adv_eps=0.5"], output_dir=tmp_path)
    estimator = instantiate(cfg.advantage)
    assert (estimator.min_spread, estimator.scale, estimator.eps) == (0.3, "batch", 0.5)
    assert compose_config([f"supervision={supervision}"], output_dir=tmp_path).grpo.min_spread == 0.0
