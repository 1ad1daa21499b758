"""The components docs/architecture.md shows, written exactly as it shows them, train.

The guide's code blocks (found by their first line, e.g. `# myloss.py`) are written to a user module and
their YAML blocks become the config node; a short debug run then calls them the way the module does
(a loss with `num_tokens=`, an estimator with the group size), and the policy must move.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from grpo.pipeline import build
from grpo_testkit import REPO, compose_config

ARCHITECTURE = REPO / "docs" / "architecture.md"
SIGNAL = ["reward._target_=grpo_testkit.DigitShareReward"]  # rewards that differ inside every group


def doc_block(first_line: str) -> str:
    """The fenced code block of docs/architecture.md whose first line is `first_line`."""
    blocks = re.findall(r"^```\w*\n(.*?)^```", ARCHITECTURE.read_text(encoding="utf-8"), flags=re.S | re.M)
    found = [b for b in blocks if b.splitlines()[0] == first_line]
    assert len(found) == 1, f"docs/architecture.md: one code block starting with {first_line!r}, found {len(found)}"
    return found[0]


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """Write docs blocks as the user's module files, importable as train.py would find them."""
    def write(first_line: str) -> None:
        (tmp_path / first_line.removeprefix("# ")).write_text(doc_block(first_line))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield write
    for name in ("myloss", "myestimators"):
        sys.modules.pop(name, None)


def train_briefly(cfg):
    module, datamodule, trainer = build(cfg)
    before = [p.detach().clone() for p in module.policy.parameters()]
    trainer.fit(module, datamodule=datamodule)
    moved = any(not torch.equal(b, p.detach()) for b, p in zip(before, module.policy.parameters()))
    return module, trainer, moved


def test_the_documented_loss_trains(user_module, base_overrides, tmp_path):
    user_module("# myloss.py")
    cfg = compose_config(base_overrides + SIGNAL + ["grpo.steps=1"], output_dir=tmp_path / "run")
    cfg.loss = OmegaConf.create(doc_block("# conf/loss/reinforce.yaml"))  # what `loss=reinforce` would compose
    module, trainer, moved = train_briefly(cfg)
    assert type(module.loss).__name__ == "ReinforceLoss" and module.loss.beta == cfg.grpo.beta > 0  # k3 branch, ref_logp given
    assert moved
    assert "train/pg_loss" in trainer.callback_metrics


def test_the_documented_estimator_trains(user_module, base_overrides, tmp_path):
    user_module("# myestimators.py")
    cfg = compose_config(base_overrides + SIGNAL + ["grpo.steps=1"], output_dir=tmp_path / "run")
    supervision = OmegaConf.create(doc_block("# @package _global_"))  # conf/supervision/mean_baseline.yaml
    cfg.advantage = supervision.advantage
    module, _, moved = train_briefly(cfg)
    assert type(module.rollout.advantages).__name__ == "MeanBaseline"
    assert moved
    # hand-worked: group [1, 0, 0, 1] has mean 0.5 -> [0.5, -0.5, -0.5, 0.5]
    assert module.rollout.advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), 4).tolist() == [0.5, -0.5, -0.5, 0.5]
