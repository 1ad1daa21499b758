"""Tool use under strategy=ddp: 2 processes on CPU (gloo) whose rollouts have different call counts and completion
widths (rank 1's tool answers 3x longer: tests/tool_fakes.RankCountTool); rollouts, updates and held-out evaluation
stay in lock-step and the run finishes (no hang), with rollout/tool/* logged."""

from __future__ import annotations

import pytest

from distributed_testkit import read_probes, train
from grpo_testkit import read_scalars

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]

TOOLS = ["+tools._target_=grpo.tools.toolbox.Toolbox", "+tools.tools=[{_target_:tool_fakes.RankCountTool}]",
         "+tools.format._target_=tool_fakes.EchoFormat", "+tools.max_calls=3", "+tools.max_result_tokens=8"]


def test_ddp_run_with_tools_of_different_lengths_per_rank(base_overrides, tmp_path):
    out, probes = tmp_path / "run", tmp_path / "probes"
    train(["strategy=ddp", "grpo.steps=2", "grpo.aggregation=token", *base_overrides, *TOOLS,
           "reward._target_=grpo_testkit.DigitShareReward", "+callbacks.probe._target_=distributed_testkit.UpdateProbe",
           f"+callbacks.probe.path={probes}", f"hydra.run.dir={out}"], tmp_path)
    rank0, rank1 = read_probes(probes)
    assert len(rank0["steps"]) == len(rank1["steps"]) == 2
    calls = [[s["stats"]["tool/calls_per_completion"] for s in r["steps"]] for r in (rank0, rank1)]
    assert sum(calls[0]) > 0 and sum(calls[1]) > 0 and calls[0] != calls[1], calls
    for zero, one in zip(rank0["steps"], rank1["steps"]):
        assert zero["step_tokens"] == one["step_tokens"] == zero["local_tokens"] + one["local_tokens"]  # all-reduced
    scalars = read_scalars(out / "tb")
    assert len(scalars["rollout/tool/call_rate"]) == 2 and len(scalars["train/loss"]) == 2
    assert "val/accuracy" in scalars and (out / "export").is_dir()
