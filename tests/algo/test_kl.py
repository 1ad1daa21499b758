"""grpo.algo.kl: the three estimators of KL(pi_theta || pi_ref)."""

import math

import pytest
import torch

from grpo.algo.kl import KL_ESTIMATORS, k1, k2, k3, kl_estimator


def test_hand_worked():
    # token 0: pi_theta = 0.5, pi_ref = 0.25 -> d = log(pi_ref / pi_theta) = -log 2
    #   k1 = log 2 = 0.693147; k2 = 0.5 * (log 2)^2 = 0.240227; k3 = 0.5 + log 2 - 1 = 0.193147
    # token 1: pi_theta = 0.25, pi_ref = 0.5 -> d = +log 2
    #   k1 = -log 2;           k2 = 0.240227;                 k3 = 2 - log 2 - 1 = 0.306853
    logp = torch.tensor([math.log(0.5), math.log(0.25)])
    ref_logp = torch.tensor([math.log(0.25), math.log(0.5)])
    ln2 = math.log(2)
    torch.testing.assert_close(k1(logp, ref_logp), torch.tensor([ln2, -ln2]))
    torch.testing.assert_close(k2(logp, ref_logp), torch.tensor([0.5 * ln2**2, 0.5 * ln2**2]))
    torch.testing.assert_close(k3(logp, ref_logp), torch.tensor([ln2 - 0.5, 1 - ln2]))


def test_k1_is_unbiased_on_the_exact_expectation():
    # E_{x ~ p}[k] over a full categorical distribution: k1 and k3 give KL(p || q) exactly, k2 does not.
    p = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    q = torch.tensor([0.2, 0.2, 0.6], dtype=torch.float64)
    kl = (p * (p / q).log()).sum()
    torch.testing.assert_close((p * k1(p.log(), q.log())).sum(), kl)
    torch.testing.assert_close((p * k3(p.log(), q.log())).sum(), kl)
    assert not torch.isclose((p * k2(p.log(), q.log())).sum(), kl)


@pytest.mark.parametrize("seed", range(3))
def test_nonnegativity_and_zero_iff_equal(seed):
    g = torch.Generator().manual_seed(seed)
    logp = -torch.rand(1000, generator=g) * 10
    ref_logp = logp + torch.randn(1000, generator=g) * 3
    assert (k2(logp, ref_logp) >= 0).all()
    assert (k3(logp, ref_logp) >= 0).all()
    far = (logp - ref_logp).abs() > 1e-3
    assert (k3(logp, ref_logp)[far] > 0).all() and (k2(logp, ref_logp)[far] > 0).all()
    for fn in (k1, k2, k3):
        assert torch.equal(fn(logp, logp), torch.zeros(1000))
        assert fn(logp.view(10, 100), ref_logp.view(10, 100)).shape == (10, 100)


def test_k3_is_accurate_near_zero():
    # k3 ~ d^2/2 + d^3/6 for small d. In float32, exp(d) - d - 1 at d = 1e-3 subtracts numbers ~1
    # (ulp 1.2e-7) to get 5e-7: ~5% error. expm1(d) - d subtracts numbers ~1e-3: ~1e-4 error.
    d = torch.tensor([1e-3, -1e-3])
    expected = d.double() ** 2 / 2 + d.double() ** 3 / 6
    torch.testing.assert_close(k3(torch.zeros(2), d).double(), expected, rtol=1e-3, atol=0)


def test_registry():
    assert all(kl_estimator(name) is fn for name, fn in KL_ESTIMATORS.items())
    assert kl_estimator(k2) is k2  # a component (any function) passes through
    with pytest.raises(ValueError, match=r"unknown KL estimator 'k4'.*\['k1', 'k2', 'k3'\]"):
        kl_estimator("k4")
