"""grpo.data.rollout_datamodule.RolloutDataModule: which questions each rank gets each epoch, the held-out
loader, and one epoch's policy updates served as the step's questions with their mini-batch groups
(with a stand-in trainer)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from grpo.data.rollout_datamodule import RolloutDataModule, StepQuestions
from grpo.tasks import ArithmeticTask

POOL = 40


@pytest.fixture(scope="module")
def task():
    return ArithmeticTask(train_size=POOL, heldout_size=7, seed=5)


def datamodule(task, **kwargs):
    args = dict(prompts_per_step=4, val_prompts=5, val_batch_size=2, seed=0)
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
def test_train_dataloader_serves_each_update_of_the_step(task, minibatch_prompts, mu):
    dm = datamodule(task, minibatch_prompts=minibatch_prompts, mu=mu)
    dm.trainer = SimpleNamespace(current_epoch=1, global_rank=0, world_size=1)
    items = list(dm.train_dataloader())
    per_pass = 4 // (minibatch_prompts or 4)
    assert len(items) == mu * per_pass
    assert all(isinstance(item, StepQuestions) for item in items)
    assert [item.update for item in items] == list(range(len(items))) and {item.updates for item in items} == {len(items)}
    assert all(prompts(item.questions) == prompts(dm.questions(1)) for item in items)  # the step's questions, every update
    for k in range(mu):  # each pass trains on every group exactly once, in whole mini-batches
        groups = sorted(g for item in items[k * per_pass : (k + 1) * per_pass] for g in item.groups.tolist())
        assert groups == [0, 1, 2, 3]
        assert all(len(item.groups) == (minibatch_prompts or 4) for item in items)
