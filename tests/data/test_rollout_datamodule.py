"""grpo.data.rollout_datamodule.RolloutDataModule: which questions each rank gets each epoch, the held-out
loader, and one epoch's rollout served as mini-batches (with a stand-in trainer and module)."""

from __future__ import annotations

from functools import partial
from types import SimpleNamespace

import pytest
import torch

from grpo.data.rollout_datamodule import RolloutDataModule
from grpo.module import GRPOModule
from grpo.rewards.verifier import VerifierReward
from grpo.tasks import ArithmeticTask
from grpo_testkit import tiny_lm

POOL = 40


@pytest.fixture(scope="module")
def task():
    return ArithmeticTask(train_size=POOL, heldout_size=7, seed=5)


def datamodule(task, **kwargs):
    args = dict(group_size=2, prompts_per_step=4, val_prompts=5, val_batch_size=2, seed=0)
    args.update(kwargs)
    dm = RolloutDataModule(task, **args)
    dm.setup("fit")
    return dm


def prompts(problems):
    return [p.prompt for p in problems]


def test_ranks_get_disjoint_questions_and_one_pass_covers_the_pool(task):
    dm = datamodule(task)
    seen = []
    for epoch in range(POOL // 8):  # 2 ranks x 4 questions per step
        r0, r1 = prompts(dm.questions(epoch, 0, 2)), prompts(dm.questions(epoch, 1, 2))
        assert len(r0) == len(r1) == 4
        assert not set(r0) & set(r1)
        seen += r0 + r1
    assert sorted(seen) == sorted(prompts(task.train_problems()))  # every question once per pass, no repeats


def test_questions_are_deterministic_and_change_with_epoch_and_seed(task):
    a, b = datamodule(task), datamodule(task)
    for epoch in (0, 3, 11):  # 11: into the second pass over the pool
        for rank in (0, 1):
            assert prompts(a.questions(epoch, rank, 2)) == prompts(b.questions(epoch, rank, 2))
    assert prompts(a.questions(0)) != prompts(a.questions(1))
    assert prompts(a.questions(0)) != prompts(datamodule(task, seed=1).questions(0))
    # the second pass walks the pool in another order
    first_pass = [prompts(a.questions(e)) for e in range(POOL // 4)]
    second_pass = [prompts(a.questions(e)) for e in range(POOL // 4, 2 * POOL // 4)]
    assert sorted(sum(second_pass, [])) == sorted(sum(first_pass, []))
    assert second_pass != first_pass


def test_ranks_slice_one_global_batch(task):
    dm = datamodule(task)
    for epoch in range(3):
        global_batch = prompts(dm.questions(2 * epoch)) + prompts(dm.questions(2 * epoch + 1))
        assert prompts(dm.questions(epoch, 0, 2)) + prompts(dm.questions(epoch, 1, 2)) == global_batch


def test_val_dataloader_serves_indexed_heldout_problems(task):
    dm = datamodule(task)
    assert dm.heldout == task.heldout_problems()[:5]
    batches = list(dm.val_dataloader())
    assert [len(b) for b in batches] == [2, 2, 1]
    assert sum(batches, []) == list(enumerate(task.heldout_problems()[:5]))


@pytest.mark.parametrize("minibatch_prompts, mu", [(None, 1), (2, 1), (None, 2), (1, 3)])
def test_updates_per_rollout(task, minibatch_prompts, mu):
    dm = datamodule(task, minibatch_prompts=minibatch_prompts, mu=mu)
    assert dm.updates_per_rollout == mu * (4 // (minibatch_prompts or 4))


def fake_trainer(dm, epoch, beta=0.0):
    """Just what train_dataloader reads from the trainer; the module is a real GRPOModule (not attached)."""
    model, tok = tiny_lm(seed=2)
    module = GRPOModule(model, tok, VerifierReward().bind(dm.task), dm.task, partial(torch.optim.AdamW, lr=1e-3), beta=beta)
    return SimpleNamespace(lightning_module=module, current_epoch=epoch, global_rank=0, world_size=1)


@pytest.mark.parametrize("minibatch_prompts, mu", [(None, 1), (2, 2)])
def test_train_dataloader_serves_the_epochs_rollout(task, minibatch_prompts, mu):
    dm = datamodule(task, minibatch_prompts=minibatch_prompts, mu=mu, max_new_tokens=6)
    dm.trainer = fake_trainer(dm, epoch=1)
    batches = list(dm.train_dataloader())
    assert len(batches) == dm.updates_per_rollout
    rows_per_batch = 2 * (minibatch_prompts or 4)
    assert all(b["input_ids"].shape[0] == rows_per_batch for b in batches)
    assert (batches[0]["old_logp"] is None) == (dm.updates_per_rollout == 1)  # pi_old only when it can differ
    assert all(b["ref_logp"] is None for b in batches)  # beta == 0: no reference
    assert set(dm.last_stats) >= {"reward_mean", "accuracy", "zero_spread_frac", "gen_time_s", "rollout_tokens_per_s"}
    assert len(dm.last_samples) == 8
    # the rollout is a function of the epoch: the same epoch again gives the same tensors, another epoch other ones
    again = list(dm.train_dataloader())
    assert all(x["input_ids"].equal(y["input_ids"]) for x, y in zip(batches, again))
    dm.trainer.current_epoch = 2
    other = list(dm.train_dataloader())
    assert any(x["input_ids"].shape != y["input_ids"].shape or not x["input_ids"].equal(y["input_ids"]) for x, y in zip(batches, other))
