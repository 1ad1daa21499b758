"""A 2-step debug run with a toolbox (the fake tool and format of tests/tool_fakes.py, given by `_target_`s on
the command line): the run trains and evaluates through the tool-calling engine and logs rollout/tool/* and
perf/tool_time_s; a run with tools=none logs none of them (tests/test_pipeline.py)."""

from __future__ import annotations

import pytest
import torch

from grpo.pipeline import build, run
from grpo.rollout.tool_decode import RESULT_MARKS
from grpo_testkit import compose_config, read_scalars

FAKE_TOOLS = [
    "+tools._target_=grpo.tools.toolbox.Toolbox",
    "+tools.tools=[{_target_:tool_fakes.CountTool}]",
    "+tools.format._target_=tool_fakes.EchoFormat",
    "+tools.max_calls=2",
    "+tools.max_result_tokens=4",
]
TOOL_SCALARS = ["rollout/tool/calls_per_completion", "rollout/tool/call_rate", "rollout/tool/errors", "perf/tool_time_s"]


def test_a_run_with_tools_trains_and_logs_tool_use(base_overrides, tmp_path):
    cfg = compose_config(base_overrides + FAKE_TOOLS + ["reward._target_=grpo_testkit.DigitShareReward"], output_dir=tmp_path)
    module, _, _ = build(cfg)
    assert module.rollout.engine.tools is not None and module.rollout.engine.tools.tokenizer is module.tokenizer
    run(cfg)
    scalars = read_scalars(tmp_path / "tb")
    for name in TOOL_SCALARS:
        assert len(scalars[name]) == 2, name  # once per GRPO step
    assert any(v > 0 for _, v in scalars["rollout/tool/calls_per_completion"])
    assert "val/accuracy" in scalars and len(scalars["train/grad_norm"]) == 2


def test_samples_panel_marks_tool_results(base_overrides, tmp_path):
    cfg = compose_config(base_overrides + FAKE_TOOLS, output_dir=tmp_path)
    module, datamodule, _ = build(cfg)
    problems = datamodule.task.train_problems()[:4]
    rollout = module.rollout(module.policy, None, problems, torch.Generator().manual_seed(0))
    assert rollout.stats["tool/calls_per_completion"] > 0
    assert any(RESULT_MARKS[0] in text for text in rollout.shown)


def test_the_mismatch_with_tools_is_over_the_policys_tokens(base_overrides, tmp_path):
    """grpo.old_logp_from=sampler with tools: the mismatch measured at the first update leaves the tool results out (the
    sampler gives them no log-prob), so in float32 on CPU it is ~0 as without tools."""
    cfg = compose_config(base_overrides + FAKE_TOOLS + ["grpo.old_logp_from=sampler", "grpo.mu=2", "grpo.minibatch_prompts=2",
                                                        "eval.every_n_steps=100", "reward._target_=grpo_testkit.DigitShareReward"],
                         output_dir=tmp_path)
    run(cfg)
    scalars = read_scalars(tmp_path / "tb")
    assert any(v > 0 for _, v in scalars["rollout/tool/calls_per_completion"])
    assert [v for _, v in scalars["rollout/mismatch/ratio_mean"]] == pytest.approx([1.0, 1.0], abs=1e-4)
    assert [v for _, v in scalars["rollout/mismatch/outside_frac"]] == [0.0, 0.0]
