"""Behaviour kept: 3 GRPO steps of each case give the parameters and per-step rollout and training metrics in
reference.json, within tolerances measured across CPU kernel paths (see behaviour_cases.py)."""

from __future__ import annotations

import json

import pytest

from behaviour_cases import CASES, PARAMETER_TOL, REFERENCE, compare, run_case


@pytest.fixture(scope="module")
def reference():
    return json.loads(REFERENCE.read_text())


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("regression_cache")  # the reward models' caches


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_same_parameters_and_metrics_as_recorded(name, reference, cache, tmp_path):
    got = run_case(name, cache, tmp_path)
    assert got["metrics"]["train/grad_norm"], "the case must update the policy"
    assert not compare(name, got, reference[name])


def test_compare_catches_a_changed_parameter_or_metric(reference):
    name = "outcome_verifier"
    assert not compare(name, reference[name], reference[name])
    for change in ("parameter", "metric", "missing metric", "extra metric"):
        changed = json.loads(json.dumps(reference[name]))
        if change == "parameter":
            tensor = next(iter(changed["parameters"]))
            changed["parameters"][tensor][1] += 10 * PARAMETER_TOL
        elif change == "metric":
            changed["metrics"]["train/grad_norm"]["1"] *= 1.001  # 1e-3 relative: 100 x METRIC_TOL
        elif change == "missing metric":
            del changed["metrics"]["train/entropy"]["2"]
        else:
            changed["metrics"]["train/entropy"]["7"] = 0.5
        assert compare(name, changed, reference[name]), change
    # a train/* statistic at 4/3 of the reference (what the old tolerance accepted for 4 updates per step)
    name = "outcome_mu2_token_k2"
    changed = json.loads(json.dumps(reference[name]))
    changed["metrics"]["train/entropy"]["3"] *= 4 / 3
    assert compare(name, changed, reference[name])
