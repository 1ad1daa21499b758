"""GroupRollout's length control (mask_truncated) and DAPO's dynamic sampling (refill): which rows enter
the loss, how many generation batches are drawn and which groups the update holds; then a real GRPO
step through the module, reading the logged rollout/gen_batches and rollout/groups_kept."""

from __future__ import annotations

import pytest
import torch

from grpo.algo.advantages import OutcomeAdvantages
from grpo.data.rollout_datamodule import Refill, RolloutDataModule
from grpo.pipeline import build
from grpo.rollout.engine import KVCacheEngine
from grpo.rollout.dynamic_sampling import select_groups
from grpo.rollout.group import GroupRollout
from grpo.tasks import ArithmeticTask
from grpo_testkit import compose_config, tiny_lm

G = 4


@pytest.fixture(scope="module")
def lm():
    return tiny_lm(seed=1)


class ListReward:
    def __init__(self, values):
        self.values = values

    def outcome(self, problems, completions):
        return torch.tensor(self.values, dtype=torch.float32)


class SpreadFor:
    """Rewards with spread (1 for a group's first completion, 0 for the others) for the questions in
    `informative`, a constant 0.5 for every other question; records the questions of each call."""

    def __init__(self, informative):
        self.informative, self.calls = set(informative), []

    def outcome(self, problems, completions):
        self.calls.append([p.prompt for p in problems[::G]])
        return torch.tensor([(1.0 if i % G == 0 else 0.0) if p.prompt in self.informative else 0.5 for i, p in enumerate(problems)])


def rollout_of(lm, task, reward, problems, *, max_new_tokens=10, refill=None, seed=0, reference=None, **kwargs):
    """One GroupRollout call; reference None: the loss has no KL term (beta = 0)."""
    model, tok = lm
    rollout = GroupRollout(KVCacheEngine(max_new_tokens=max_new_tokens), OutcomeAdvantages(eps=0.0), group_size=G,
                           reward=reward, task=task, tokenizer=tok, **kwargs)
    return rollout(model, reference, problems, torch.Generator().manual_seed(seed), refill=refill)


# ---------------------------------------------------------------- mask_truncated
def test_mask_truncated_removes_exactly_the_truncated_rows_tokens(lm):
    task = ArithmeticTask(train_size=30, heldout_size=5, seed=4)
    problems = task.train_problems()[:3]
    rewards = [1.0, 0.0, 1.0, 0.0] * 3  # every group has spread: only truncation decides
    plain = rollout_of(lm, task, ListReward(rewards), problems, skip_zero_spread=False)
    masked = rollout_of(lm, task, ListReward(rewards), problems, skip_zero_spread=False, mask_truncated=True)
    a, b = plain.batch, masked.batch
    assert a.input_ids.equal(b.input_ids)  # the same rollout (same seed)
    T = a.completion_mask.shape[1]
    eos = lm[1].eos_token_id
    ended = (a.input_ids[:, -T:] == eos).any(-1)  # [N] emitted EOS within max_new_tokens = not truncated
    lengths = a.completion_mask.sum(-1)
    assert ended.any() and (~ended).any()  # the setting mixes both (seed 0, max_new_tokens 10)
    assert ((lengths == 10) & ended).any()  # and a row that ended with EOS exactly at the limit: not truncated, kept
    assert not b.completion_mask[~ended].any()  # truncated rows: no token in the loss
    assert b.completion_mask[ended].equal(a.completion_mask[ended])  # the others untouched
    assert int(b.completion_mask.sum()) == int(a.completion_mask.sum()) - 10 * int((~ended).sum())
    # rewards and advantages as without it (TRL: only the loss mask changes); truncated rows still shape the baseline
    assert b.advantages.equal(a.advantages) and (b.advantages[~ended] != 0).any()
    assert masked.stats["reward_mean"] == plain.stats["reward_mean"]
    assert masked.stats["truncated_frac"] == pytest.approx(float((~ended).float().mean()))


# ---------------------------------------------------------------- choosing the groups
def test_select_groups_hand_worked():
    T, F = True, False
    got = select_groups([torch.tensor([T, F, T]), torch.tensor([F, T, T])], 3)
    assert got == [(0, 0, T), (0, 2, T), (1, 1, T)]  # informative ones in the order drawn, the 4th dropped
    assert select_groups([torch.tensor([F, T, F])], 2) == [(0, 1, T), (0, 0, F)]  # short: the first flat group fills
    with pytest.raises(ValueError, match="fewer than the 3"):
        select_groups([torch.tensor([F, T])], 3)


@pytest.fixture(scope="module")
def datamodule():
    task = ArithmeticTask(train_size=200, heldout_size=5, seed=4)
    dm = RolloutDataModule(task, prompts_per_step=4, dynamic_sampling=True, max_extra_batches=3, seed=0)
    dm.setup()
    return dm


def test_extra_questions_are_seeded_and_disjoint_across_ranks(datamodule):
    dm = datamodule
    first, again = dm.extra_questions(0), dm.extra_questions(0)
    assert len(first) == 3 and all(len(b) == 4 for b in first)
    assert [[p.prompt for p in b] for b in first] == [[p.prompt for p in b] for b in again]  # a function of (seed, epoch, rank)
    assert [p.prompt for p in dm.extra_questions(1)[0]] != [p.prompt for p in first[0]]  # another step, others
    r0, r1 = ([p.prompt for b in dm.extra_questions(0, r, 2) for p in b] for r in (0, 1))
    assert not set(r0) & set(r1)


def step_questions(dm):
    base, extra = dm.questions(0), dm.extra_questions(0)
    prompts = [p.prompt for p in base] + [p.prompt for b in extra for p in b]
    assert len(set(prompts)) == len(prompts)  # no repeats in this draw: the counts below are exact
    return base, extra


def test_dynamic_sampling_draws_until_the_update_is_full(lm, datamodule):
    base, extra = step_questions(datamodule)
    # informative: 1 of the first batch, 2 of the second, 2 of the third -> after 3 batches 5 >= 4: stop, keep 4
    informative = [base[1], extra[0][0], extra[0][3], extra[1][2], extra[1][3]]
    reward = SpreadFor([p.prompt for p in informative])
    out = rollout_of(lm, datamodule.task, reward, base, refill=Refill(extra, groups=4))
    assert len(reward.calls) == 3 and reward.calls[2] == [p.prompt for p in extra[1]]  # batches drawn in order
    assert out.stats["gen_batches"] == 3.0 and out.stats["groups_kept"] == 4.0
    batch = out.batch
    assert len(batch) == 4 * G
    kept = [p.prompt for p in informative[:4]]  # the first 4 informative groups, in the order drawn
    T = batch.completion_mask.shape[1]
    prompts = lm[1].batch_decode(batch.input_ids[::G, :-T], skip_special_tokens=True)
    assert prompts == kept
    assert batch.completion_mask.view(4, G, -1).any(-1).any(-1).all()  # every kept group enters the loss
    assert (batch.advantages.view(4, G) != 0).all()  # each has its spread: A = [1.5, -0.5, -0.5, -0.5]
    torch.testing.assert_close(batch.advantages[:G], torch.tensor([1.5, -0.5, -0.5, -0.5]))
    # the policy's behaviour is logged over all 12 groups drawn: 5 informative
    assert out.stats["zero_spread_frac"] == pytest.approx(1 - 5 / 12)
    assert len(out.samples) == 12 * G
    # each row's completion and padding survived the merge: attention over the completion = its mask
    assert batch.completion_mask.equal(batch.attention_mask[:, -T:].bool())


def test_dynamic_sampling_short_of_groups_fills_with_flat_ones_out_of_the_loss(lm, datamodule):
    base, extra = step_questions(datamodule)
    informative = [extra[2][1]]  # only one informative group in all 4 batches
    reward = SpreadFor([informative[0].prompt])
    out = rollout_of(lm, datamodule.task, reward, base, refill=Refill(extra, groups=4))
    assert out.stats["gen_batches"] == 4.0 and out.stats["groups_kept"] == 1.0  # 1 + max_extra_batches drawn
    batch = out.batch
    assert len(batch) == 4 * G  # the update's size is fixed: 3 flat fillers
    T = batch.completion_mask.shape[1]
    prompts = lm[1].batch_decode(batch.input_ids[::G, :-T], skip_special_tokens=True)
    assert prompts == [informative[0].prompt] + [p.prompt for p in base[:3]]  # then the first flat groups drawn
    in_loss = batch.completion_mask.view(4, G, -1).any(-1).any(-1)  # [groups]
    assert in_loss.tolist() == [True, False, False, False]


@pytest.mark.parametrize("why", ["skip_zero_spread=false", "beta>0"])
def test_dynamic_sampling_fillers_enter_the_loss_when_flat_groups_are_not_skipped(lm, datamodule, why):
    """The fillers are flat groups: grpo.skip_zero_spread=false keeps them in the loss, and so does a KL term
    (a reference given: their -beta*KL gradient is part of the objective), as without dynamic sampling."""
    base, extra = step_questions(datamodule)
    reward = SpreadFor([extra[2][1].prompt])  # one informative group: 3 fillers
    kwargs = {"skip_zero_spread": False} if why == "skip_zero_spread=false" else {"reference": lm[0]}
    out = rollout_of(lm, datamodule.task, reward, base, refill=Refill(extra, groups=4), **kwargs)
    batch = out.batch
    T = batch.completion_mask.shape[1]
    assert batch.completion_mask.equal(batch.attention_mask[:, -T:].bool())  # every row's tokens in the loss
    assert (batch.advantages[G:] == 0).all()  # the fillers' advantages: 0
    assert out.stats["groups_kept"] == 1.0 and out.stats["groups_updated"] == 4.0


def test_without_refill_one_batch_as_before(lm, datamodule):
    base, _ = step_questions(datamodule)
    reward = SpreadFor([])
    out = rollout_of(lm, datamodule.task, reward, base)
    assert len(reward.calls) == 1 and "gen_batches" not in out.stats and len(out.batch) == 4 * G


# ---------------------------------------------------------------- through the module: a real GRPO step
def test_dynamic_sampling_step_logs_batches_and_groups(base_overrides, tmp_path):
    cfg = compose_config(base_overrides + [
        "grpo.steps=1", "eval.every_n_steps=100", "+trainer.enable_progress_bar=false", "grpo.dynamic_sampling.enabled=true",
        "grpo.dynamic_sampling.max_extra_batches=2", "grpo.dynamic_sampling.groups=2", "grpo.minibatch_prompts=1",
    ], output_dir=tmp_path)
    module, datamodule, trainer = build(cfg)
    datamodule.setup()
    base, extra = datamodule.questions(0), datamodule.extra_questions(0)
    assert len(base) == 4 and len(extra) == 2  # debug=default: 4 questions per step
    informative = [extra[0][2], extra[1][0], extra[1][1]]  # none in the first batch, 1 in the second, 2 in the third
    module.rollout.reward = SpreadFor([p.prompt for p in informative])
    updates = []
    module.on_train_batch_end = lambda outputs, batch, batch_idx: updates.append(batch.groups.tolist())
    trainer.fit(module, datamodule=datamodule)
    metrics = trainer.callback_metrics
    assert float(metrics["rollout/gen_batches"]) == 3.0 and float(metrics["rollout/groups_kept"]) == 2.0
    assert float(metrics["rollout/groups_updated"]) == 2.0
    assert updates == [[0], [1]]  # the mini-batch plan covers the 2 kept groups, one per update
    assert len(module.last_rollout.batch) == 2 * 4  # groups x G
