"""The prompt curriculum (grpo.data.curriculum, RolloutDataModule with data.curriculum.enabled): a hand-made sequence
of group outcomes -> which questions rest and when they come back; the data module passes over resting questions,
draws the same on every rank, and resumes from its state; a debug run reports outcomes and logs data/pool/*."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from grpo.data.curriculum import EASY, HARD, MIXED, DifficultyPool, group_outcomes
from grpo.data.rollout_datamodule import RolloutDataModule
from grpo.pipeline import run
from grpo.tasks import ArithmeticTask
from grpo_testkit import compose_config, read_scalars

POOL = 12


def test_group_outcomes():
    correct = torch.tensor([1, 1, 1, 0, 0, 0, 1, 0, 1], dtype=torch.float32)
    assert group_outcomes(correct, 3).tolist() == [EASY, HARD, MIXED]


def test_a_sequence_of_outcomes_rests_and_returns_questions():
    pool = DifficultyPool(window=2, rest_steps=3)
    pool.record(0, [0, 1, 2], [EASY, HARD, MIXED])
    assert not any(pool.rests(q, 1) for q in (0, 1, 2))  # one draw is not a window of 2
    pool.record(1, [0, 1, 2], [EASY, MIXED, HARD])  # q0: easy twice -> rests in steps 2, 3, 4 (recorded at 1, +3)
    pool.record(2, [1, 2], [HARD, HARD])  # q1: [mixed, hard] no; q2: hard twice -> rests in steps 3, 4, 5
    assert [pool.rests(0, s) for s in (2, 3, 4, 5)] == [True, True, True, False]
    assert [pool.rests(2, s) for s in (3, 4, 5, 6)] == [True, True, True, False]
    assert not pool.rests(1, 3)
    assert pool.sizes(3, POOL) == {"easy": 1.0, "hard": 1.0, "active": 10.0}
    assert pool.sizes(5, POOL) == {"easy": 0.0, "hard": 1.0, "active": 11.0}  # q0 is back
    pool.record(5, [0], [EASY])  # back with a fresh history: one easy draw does not send it to rest again
    assert not pool.rests(0, 6)
    pool.record(6, [0], [EASY])
    assert pool.rests(0, 7)
    restored = DifficultyPool(window=2, rest_steps=3)
    restored.load_state_dict(pool.state_dict())
    assert (restored.history, restored.resting) == (pool.history, pool.resting)
    with pytest.raises(ValueError, match=r"data\.curriculum\.window=0"):
        DifficultyPool(window=0)


@pytest.fixture(scope="module")
def task():
    return ArithmeticTask(train_size=POOL, heldout_size=3, seed=5)


def datamodule(task, **curriculum):
    dm = RolloutDataModule(task, prompts_per_step=2, val_prompts=3, seed=0,
                           curriculum=dict(dict(enabled=True, window=1, rest_steps=2), **curriculum))
    dm.setup("fit")
    return dm


def test_resting_questions_are_passed_over_then_drawn_again(task):
    dm, plain = datamodule(task), datamodule(task, enabled=False)
    # nothing rests yet: the same walk as without the curriculum (2 ranks x 2 questions)
    step0 = dm.curriculum_indices(0, world=2)
    assert [task.train_problems()[i].prompt for i in step0] == [p.prompt for r in (0, 1) for p in plain.questions(0, r, 2)]
    assert dm.curriculum_indices(0, world=2) == step0  # drawn once per step
    # window 1: all right or all wrong once rests 2 steps. Step 0's first and last group: easy / hard; the others mixed
    assert dm.report(0, step0, [EASY, MIXED, MIXED, HARD]) == {"easy": 1.0, "hard": 1.0, "active": POOL - 2.0}
    walk = [int(i) for i in dm._permutation(0)]
    assert step0 == walk[:4]
    dm.pool.record(0, [walk[5]], [HARD])  # a question in the walk's way (not drawn; recorded by hand): rests in steps 1, 2
    assert dm.curriculum_indices(1, world=2) == [walk[4], walk[6], walk[7], walk[8]]  # walk[5] passed over
    dm.report(1, [walk[4], walk[6], walk[7], walk[8]], [MIXED] * 4)
    # step 2: walk[9:12], then the second pass's order, passing over walk[0], walk[3], walk[5] (resting until step 2)
    second = [int(i) for i in dm._permutation(1)]
    step2 = walk[9:12] + [i for i in second if i not in (walk[0], walk[3], walk[5])][:1]
    assert dm.curriculum_indices(2, world=2) == step2
    dm.report(2, step2, [EASY, MIXED, MIXED, MIXED])  # walk[9] rests in steps 3, 4
    want = [i for i in second[second.index(step2[-1]) + 1 :] if i != walk[9]][:4]
    assert dm.curriculum_indices(3, world=2) == want  # walk[9] passed over; step 0's easy and hard questions are back
    # resuming from the state after step 3's draw draws step 4 as the uninterrupted run does
    resumed = datamodule(task)
    resumed.load_state_dict(dm.state_dict())
    step4 = dm.curriculum_indices(4, world=2)
    assert resumed.curriculum_indices(4, world=2) == step4
    assert {walk[0], walk[3]} & set(want + step4 + dm.curriculum_indices(5, world=2))  # drawn again in the second pass


def test_the_dataloader_serves_each_rank_its_slice_with_the_report_channel(task):
    dm = datamodule(task)
    items = {}
    for rank in (0, 1):
        dm.trainer = SimpleNamespace(current_epoch=0, global_rank=rank, world_size=2)
        (item,) = list(dm.train_dataloader())
        items[rank] = item
        assert [p.prompt for p in item.questions] == [task.train_problems()[i].prompt for i in item.indices]
        assert item.report == dm.report
    assert items[0].indices + items[1].indices == dm.curriculum_indices(0, world=2)
    off = datamodule(task, enabled=False)
    off.trainer = SimpleNamespace(current_epoch=0, global_rank=0, world_size=1)
    (item,) = list(off.train_dataloader())
    assert item.indices is None and item.report is None and off.state_dict() == {}
    with pytest.raises(ValueError, match=r"data\.curriculum has unknown keys \['rest'\]"):
        datamodule(task, rest=3)


def test_a_run_reports_outcomes_and_logs_the_pool(base_overrides, tmp_path):
    cfg = compose_config(base_overrides + ["data.curriculum.enabled=true", "data.curriculum.window=1", "data.curriculum.rest_steps=5",
                                           "eval.every_n_steps=100", "grpo.steps=2"], output_dir=tmp_path)
    run(cfg)
    scalars = read_scalars(tmp_path / "tb")
    sizes = {name: [v for _, v in scalars[f"data/pool/{name}"]] for name in ("easy", "hard", "active")}
    assert len(sizes["active"]) == 2
    # window 1: every all-right / all-wrong group of a step rests; the pool's parts add up to the training pool
    pool_size = float(len(ArithmeticTask(**{k: v for k, v in cfg.task.items() if k != "_target_"}).train_problems()))
    assert all(e + h + a == pool_size for e, h, a in zip(sizes["easy"], sizes["hard"], sizes["active"]))
    assert sizes["easy"][-1] + sizes["hard"][-1] >= sizes["easy"][0] + sizes["hard"][0]
    assert sizes["easy"][-1] + sizes["hard"][-1] > 0  # some group of 4 at ~8% accuracy is all wrong
