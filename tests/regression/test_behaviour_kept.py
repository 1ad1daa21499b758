"""The redesign kept behaviour: 3 GRPO steps of each case give the parameters (<= 1e-6) and per-step
rollout and training metrics recorded from main at e864651 (see behaviour_cases.py)."""

from __future__ import annotations

import json

import pytest

from behaviour_cases import CASES, REFERENCE, compare, run_case


@pytest.fixture(scope="module")
def reference():
    return json.loads(REFERENCE.read_text())


@pytest.fixture(scope="module")
def cache(warm_cache):
    return warm_cache  # the cases' warm start is debug=default's (same task, model and warm-start settings)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_same_parameters_and_metrics_as_before_the_redesign(name, reference, cache, tmp_path):
    got = json.loads(json.dumps(run_case(name, cache, tmp_path)))  # int keys become strings, as in the reference
    assert got["metrics"]["train/grad_norm"], "the case must update the policy"
    assert not compare(name, got, reference[name])


def test_compare_catches_a_changed_parameter(reference):
    name = "outcome_verifier"
    changed = json.loads(json.dumps(reference[name]))
    tensor = next(iter(changed["parameters"]))
    changed["parameters"][tensor][1] += 1e-5
    assert compare(name, changed, reference[name]) and not compare(name, reference[name], reference[name])
