"""grpo.algo.gdpo: each reward component normalised in its group, weighted, summed, then divided by the batch std."""

from __future__ import annotations

import math

import pytest
import torch

from grpo.algo.advantages import outcome_advantages
from grpo.algo.gdpo import GDPOAdvantages, gdpo_advantages

NAN = float("nan")
# two groups of G = 4; component 1 (weight 1) e.g. correctness, component 2 (weight 0.5) e.g. format
R1 = [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
R2 = [1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]
# group 0: r1 mean 0.5, sample std sqrt(4 * 0.25 / 3) = 0.577350 -> A1 = +-0.866025
#          r2 mean 0.25, deviations [0.75, -0.25, -0.25, -0.25], var 0.75 / 3 = 0.25, std 0.5 -> A2 = [1.5, -0.5, -0.5, -0.5]
#          S = A1 + 0.5 A2 = [1.616025, 0.616025, -1.116025, -1.116025]
# group 1: no spread in either component -> S = 0
S = [1.616025, 0.616025, -1.116025, -1.116025, 0.0, 0.0, 0.0, 0.0]
# batch std of S (mean 0): sqrt((1.616025^2 + 0.616025^2 + 2 * 1.116025^2) / 7) = sqrt(5.482048 / 7) = 0.884958
BATCH_STD = 0.884958


def components():
    return torch.tensor([R1, R2]), torch.tensor([1.0, 0.5])


def test_each_component_normalised_in_its_group_then_batch_normalised():
    values, weights = components()
    adv = gdpo_advantages(values, weights, 4, eps=0.0, batch_norm=False)
    torch.testing.assert_close(adv, torch.tensor(S), atol=1e-5, rtol=0)
    adv = gdpo_advantages(values, weights, 4, eps=0.0)
    torch.testing.assert_close(adv, torch.tensor(S) / BATCH_STD, atol=1e-5, rtol=0)
    assert (adv[4:] == 0).all()  # a flat group stays exactly 0
    # GRPO on the weighted sum [1.5, 1, 0, 0] gives another order of magnitudes: rows 1 vs 2 differ by 2 x 0.5 / 0.6455
    grpo = outcome_advantages(values[0] + 0.5 * values[1], 4, eps=0.0)
    assert not torch.allclose(grpo[:4], adv[:4], atol=1e-2)


def test_scale_and_weights_act():
    values, weights = components()
    # scale=none: A1 = [0.5, 0.5, -0.5, -0.5], A2 = [0.75, -0.25, -0.25, -0.25]; S = A1 + 0.5 A2
    adv = gdpo_advantages(values, weights, 4, scale=False, eps=0.0, batch_norm=False)
    torch.testing.assert_close(adv[:4], torch.tensor([0.875, 0.375, -0.625, -0.625]))
    # weight -0.5 (a penalty): S = A1 - 0.5 A2 = [0.866025 - 0.75, 0.866025 + 0.25, -0.866025 + 0.25, -0.866025 + 0.25]
    adv = gdpo_advantages(values, torch.tensor([1.0, -0.5]), 4, eps=0.0, batch_norm=False)
    torch.testing.assert_close(adv[:4], torch.tensor([0.116025, 1.116025, -0.616025, -0.616025]), atol=1e-5, rtol=0)


def test_abstentions_and_min_spread():
    # component 2 abstains on row 3 of group 0: its values [1, 0, 0] -> mean 1/3, std sqrt((4/9 + 2/9) / 2) = 0.577350
    #   A2 = [1.154701, -0.577350, -0.577350, 0 (abstained)]
    values = torch.tensor([R1, [1.0, 0.0, 0.0, NAN, 1.0, 1.0, 1.0, 1.0]])
    adv = gdpo_advantages(values, torch.tensor([1.0, 1.0]), 4, eps=0.0, batch_norm=False)
    torch.testing.assert_close(adv[:4], torch.tensor([0.866025 + 1.154701, 0.866025 - 0.577350, -0.866025 - 0.577350, -0.866025]),
                               atol=1e-5, rtol=0)
    # a component that spans less than min_spread in a group adds 0 there: 0.4 < 0.5 for component 1 below
    values = torch.tensor([[0.4, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    adv = gdpo_advantages(values, torch.tensor([1.0, 1.0]), 4, eps=0.0, min_spread=0.5, batch_norm=False)
    torch.testing.assert_close(adv, torch.tensor([0.866025, 0.866025, -0.866025, -0.866025]), atol=1e-5, rtol=0)


def test_the_estimator_takes_components_by_name():
    est = GDPOAdvantages(eps=0.0)
    assert est.needs_components and not est.needs_step_rewards
    values, _ = components()
    adv = est(torch.zeros(8), 4, components={"correct": (1.0, values[0]), "format": (0.5, values[1])})
    torch.testing.assert_close(adv, torch.tensor(S) / BATCH_STD, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="supervision=gdpo needs the reward's components"):
        est(torch.zeros(8), 4)
    assert math.isclose(GDPOAdvantages(batch_norm=False).batch_norm, 0)
