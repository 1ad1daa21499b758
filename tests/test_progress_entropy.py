"""grpo.progress.StepProgressBar's entropy-collapse check: the log line says it, a warning is logged once per crossing."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch

from grpo.progress import StepProgressBar


def lines_for(entropies, floor, caplog, ratio=None):
    bar = StepProgressBar(log_every=1, entropy_floor=floor, entropy_ratio=ratio)
    bar._start, bar._first, bar._done = 0.0, 0, 0
    trainer = SimpleNamespace(is_global_zero=True, max_epochs=len(entropies), callback_metrics={})
    with caplog.at_level(logging.INFO, logger="grpo"):
        for value in entropies:
            trainer.callback_metrics = {"train/entropy": torch.tensor(value), "rollout/reward_mean": torch.tensor(0.5)}
            bar._advance(trainer)
    return [r.getMessage() for r in caplog.records if r.levelno == logging.INFO], [r for r in caplog.records if r.levelno == logging.WARNING]


def test_collapse_is_marked_and_warned_once_per_crossing(caplog):
    # floor 0.05: 0.30 fine, 0.04 below (warn), 0.01 still below (no new warning), 0.2 recovered, 0.03 below again (warn)
    lines, warnings = lines_for([0.30, 0.04, 0.01, 0.20, 0.03], 0.05, caplog)
    assert [("entropy collapse (< 0.05)" in line) for line in lines] == [False, True, True, False, True]
    assert all("entropy 0." in line for line in lines)
    assert len(warnings) == 2 and "entropy_floor=0.05" in warnings[0].getMessage()


def test_no_floor_no_check(caplog):
    lines, warnings = lines_for([0.001], None, caplog)
    assert "collapse" not in lines[0] and not warnings


def test_ratio_is_against_the_first_step(caplog):
    # ratio 0.25 of the first step's 0.04 = 0.01: 0.03 and 0.011 are fine (a low-entropy warm start is not a collapse),
    # 0.009 is below (warn), 0.02 recovered
    lines, warnings = lines_for([0.04, 0.03, 0.011, 0.009, 0.02], None, caplog, ratio=0.25)
    assert [("entropy collapse (< 0.01)" in line) for line in lines] == [False, False, False, True, False]
    assert len(warnings) == 1 and "entropy_ratio=0.25 x the first step's 0.0400" in warnings[0].getMessage()


def test_both_floors_the_higher_counts(caplog):
    # floor 0.05 and ratio 0.25 of 0.4 = 0.1: 0.08 is above the floor but below the ratio's threshold
    lines, warnings = lines_for([0.4, 0.08, 0.04], 0.05, caplog, ratio=0.25)
    assert [("entropy collapse (< 0.1)" in line) for line in lines] == [False, True, True]
    assert len(warnings) == 1 and "entropy_ratio" in warnings[0].getMessage() and "entropy_floor" not in warnings[0].getMessage()


def test_bad_floor():
    with pytest.raises(ValueError, match="entropy_floor"):
        StepProgressBar(entropy_floor=0.0)
    with pytest.raises(ValueError, match="entropy_ratio"):
        StepProgressBar(entropy_ratio=1.5)
