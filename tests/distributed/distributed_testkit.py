"""Helpers for the multi-process tests (also importable as `distributed_testkit` by the processes they start).

- `DigitShareSteps`: outcome and process rewards with spread inside groups, so every step updates.
- `train(overrides, cwd)`: `python train.py ...` as a user runs it, in a subprocess; fails the test on error.
- `run_python(args, cwd)`: any script the same way (the equivalence worker).
- `parameters(path)`, `warm_start(cache)`: an exported / cached model's parameters and folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from grpo_testkit import REPO, DigitShareReward

SIGNAL = ["reward._target_=distributed_testkit.DigitShareSteps"]
TIMEOUT = 600  # seconds per command; a first DeepSpeed run on a CPU machine also JIT-compiles a C++ op (~1 min)


class DigitShareSteps(DigitShareReward):
    """DigitShareReward with process rewards too: every ';' that ends a step, and the completion's last
    character, get the completion's digit share (scaled by how far along it is), so that groups have
    step-reward spread even for an untrained policy and supervision=process really updates it."""

    def steps(self, problems, completions):
        rewards = []
        for share, text in zip(self.outcome(problems, completions).tolist(), completions):
            ends = [i for i, ch in enumerate(text) if ch == ";"] + ([len(text) - 1] if text else [])
            rewards.append([(end, share * (k + 1) / len(ends)) for k, end in enumerate(ends)])
        return rewards


class SpreadOnRank1(DigitShareReward):
    """Digit-share rewards (spread in every group) on rank 1; a constant 0.5 (no group has spread) on rank 0.
    Under dynamic sampling rank 0 then draws every extra batch it may and rank 1 only its first."""

    def outcome(self, problems, completions):
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_rank() == 1:
            return super().outcome(problems, completions)
        return torch.full((len(completions),), 0.5)


class RankNoiseDigitShare(DigitShareReward):
    """DigitShareReward that also draws from the global random state, a different amount on each rank (as a
    user's reward may): anything else that draws from it afterwards differs between the ranks unless seeded."""

    def outcome(self, problems, completions):
        import torch.distributed as dist

        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        torch.rand(1 + 7 * rank)
        return super().outcome(problems, completions)


class SavePolicy:
    """A callback (`+callbacks.save_policy._target_=distributed_testkit.SavePolicy +callbacks.save_policy.path=DIR`):
    each rank's policy weights at the end of training, to DIR/rank<r>.pt."""

    def __new__(cls, path):
        from lightning.pytorch.callbacks import Callback

        class _Save(Callback):
            def on_train_end(self, trainer, pl_module):
                Path(path).mkdir(parents=True, exist_ok=True)
                state = {k: v.detach().cpu() for k, v in pl_module.policy.state_dict().items()}
                torch.save(state, Path(path) / f"rank{trainer.global_rank}.pt")

        return _Save()


def run_python(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    paths = [str(REPO / "tests"), str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths), OMP_NUM_THREADS="1")
    env.pop("LOCAL_RANK", None)
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, f"{' '.join(args)}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-6000:]}"
    return proc


def train(overrides: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return run_python([str(REPO / "train.py"), *overrides], cwd)


def parameters(path) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in AutoModelForCausalLM.from_pretrained(str(path)).named_parameters()}


def warm_start(cache: Path) -> Path:
    (path,) = [p for p in Path(cache).glob("warmstart-*") if p.is_dir() and not p.name.endswith(".tmp")]
    return path


def has_compiler() -> bool:
    """DeepSpeed on CPU builds a small C++ op the first time: it needs a compiler."""
    return shutil.which("c++") is not None or shutil.which("g++") is not None
