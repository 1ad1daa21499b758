"""Helpers for the multi-process tests (also importable as `distributed_testkit` by the processes they start).

- `DigitShareSteps`: outcome and process rewards with spread inside groups, so every step updates.
- `train(overrides, cwd)`: `python train.py ...` as a user runs it, in a subprocess; fails the test on error.
- `run_python(args, cwd)`: any script the same way (the equivalence worker).
- `parameters(path)`, `warm_start(cache)`: an exported / cached model's parameters and folder.
- `SavePolicy`, `UpdateProbe` (callbacks a run adds with +callbacks.<name>...): each rank's weights; what its updates did.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback
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


class SavePolicy(Callback):
    """`+callbacks.save_policy._target_=distributed_testkit.SavePolicy +callbacks.save_policy.path=DIR`: each rank's
    policy weights at the end of training, to DIR/rank<r>.pt."""

    def __init__(self, path):
        self.path = Path(path)

    def on_train_end(self, trainer, pl_module):
        self.path.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.detach().cpu() for k, v in pl_module.policy.state_dict().items()}, self.path / f"rank{trainer.global_rank}.pt")


class UpdateProbe(Callback):
    """`+callbacks.probe._target_=distributed_testkit.UpdateProbe +callbacks.probe.path=DIR`: what each rank's updates
    really did, to DIR/rank<r>.json: the decoder layers' forwards in the updates and recomputed in their backward
    (counted by wrapping each layer's MLP forward: module hooks do not fire in the recompute), the dtypes of the
    LM head's outputs in the updates, and per GRPO step the rollout's stats, the tokens of this rank's rollout in
    the loss, the step's token count (all-reduced) and, per group, whether it enters the loss and its advantage spread."""

    def __init__(self, path):
        self.path = Path(path)
        self.calls, self.in_update, self._mark = 0, False, 0
        self.record = {"forward": 0, "recomputed": 0, "update_dtypes": [], "steps": []}

    def on_fit_start(self, trainer, pl_module):
        policy = pl_module.policy
        for layer in policy.model.layers:
            layer.mlp.forward = self._counting(layer.mlp.forward)
        policy.lm_head.register_forward_hook(self._dtype)
        step = pl_module.training_step

        def probed_step(batch, batch_idx):
            before, self.in_update = self.calls, True
            try:
                return step(batch, batch_idx)
            finally:
                self.in_update = False
                self.record["forward"] += self.calls - before

        pl_module.training_step = probed_step

    def _counting(self, forward):
        def counted(*args, **kwargs):
            self.calls += 1
            return forward(*args, **kwargs)

        return counted

    def _dtype(self, module, inputs, output):
        if self.in_update and str(output.dtype) not in self.record["update_dtypes"]:
            self.record["update_dtypes"].append(str(output.dtype))

    def on_before_backward(self, trainer, pl_module, loss):
        self._mark = self.calls

    def on_after_backward(self, trainer, pl_module):
        self.record["recomputed"] += self.calls - self._mark

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch.update != 0:
            return
        rollout, G = pl_module.last_rollout, pl_module.rollout.group_size
        mask, adv = rollout.batch.completion_mask, rollout.batch.advantages
        self.record["steps"].append({
            "stats": rollout.stats, "local_tokens": int(mask.sum()), "step_tokens": float(pl_module._step_tokens),
            "group_in_loss": mask.view(-1, G, mask.shape[1]).any(-1).any(-1).tolist(),
            "group_spread": (adv.reshape(-1, G, adv[0].numel()) != 0).any(-1).any(-1).tolist(),
        })

    def on_train_end(self, trainer, pl_module):
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / f"rank{trainer.global_rank}.json").write_text(json.dumps(self.record))


def read_probes(path) -> list[dict]:
    """The UpdateProbe records of ranks 0 and 1."""
    return [json.loads((Path(path) / f"rank{r}.json").read_text()) for r in (0, 1)]


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
