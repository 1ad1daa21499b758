"""grpo.data.minibatches (the step's mini-batch plan) and RolloutBatch.rows: whole groups per mini-batch,
every row exactly once per pass, seeded shuffling, and padding trimmed without losing a real token."""

from __future__ import annotations

import pytest
import torch

from grpo.data.minibatches import group_rows, minibatch_plan
from grpo.rollout.batch import RolloutBatch

PAD = 0


def make_rollout(prompts: int, group_size: int, prompt_width: int = 6, T: int = 8, process: bool = False, seed: int = 0):
    """A rollout with ragged prompts (left-padded) and completions (right-padded).

    Row identity is recoverable from any mini-batch: old_logp[:, 0] == -row (column 0 is never trimmed away,
    see `real_completion`), and in outcome mode advantages == row.
    """
    g = torch.Generator().manual_seed(seed)
    N = prompts * group_size
    prompt_len = torch.randint(1, prompt_width, (prompts,), generator=g).repeat_interleave(group_size)
    prompt_len[0] = 1  # prompts are shorter than prompt_width: left columns that are padding in every row
    comp_len = torch.randint(1, T, (N,), generator=g)  # never the full T: the last column is padding
    ids = torch.randint(5, 50, (N, prompt_width + T), generator=g)
    attn = torch.zeros(N, prompt_width + T, dtype=torch.long)
    for i in range(N):
        attn[i, prompt_width - prompt_len[i] : prompt_width] = 1
        attn[i, prompt_width : prompt_width + comp_len[i]] = 1
    ids[attn == 0] = PAD
    comp_mask = attn[:, prompt_width:].bool()
    comp_mask[group_size : 2 * group_size] = False  # a zero-spread group: no loss tokens, tokens still present
    old_logp = -torch.rand(N, T, generator=g)
    old_logp[:, 0] = -torch.arange(N).float()
    if process:
        advantages = torch.randn(N, T, generator=g) * attn[:, prompt_width:]
    else:
        advantages = torch.arange(N).float()
    return RolloutBatch(
        input_ids=ids,
        attention_mask=attn,
        completion_mask=comp_mask,
        advantages=advantages,
        old_logp=old_logp,
        ref_logp=old_logp - 0.1,
    )


def RolloutMinibatches(rollout: RolloutBatch, group_size: int, minibatch_groups: int, mu: int, seed: int) -> list:
    """The mini-batches a step trains on, in order: what GRPOModule takes from its rollout for each update."""
    plan = minibatch_plan(len(rollout) // group_size, minibatch_groups, mu, seed)
    return [rollout.rows(group_rows(groups, group_size)) for groups in plan]


def rows_of(item) -> list[int]:
    return (-item["old_logp"][:, 0]).round().long().tolist()


@pytest.mark.parametrize("prompts, group_size, minibatch_groups, mu", [(6, 3, 2, 3), (4, 2, 4, 2), (8, 4, 1, 1), (5, 2, 5, 1)])
def test_passes_cover_every_row_once_in_whole_groups(prompts, group_size, minibatch_groups, mu):
    rollout = make_rollout(prompts, group_size)
    mbs = RolloutMinibatches(rollout, group_size, minibatch_groups, mu, seed=0)
    per_pass = prompts // minibatch_groups
    assert len(mbs) == mu * per_pass
    for k in range(mu):
        seen = []
        for j in range(per_pass):
            rows = rows_of(mbs[k * per_pass + j])
            assert len(rows) == minibatch_groups * group_size
            assert rows == sorted(rows)
            groups = {r // group_size for r in rows}
            assert len(groups) == minibatch_groups
            assert sorted(rows) == sorted(g * group_size + i for g in groups for i in range(group_size))  # whole groups
            seen += rows
        assert sorted(seen) == list(range(prompts * group_size)), f"pass {k}"


def test_shuffling_is_seeded_and_differs_between_passes():
    rollout = make_rollout(8, 2)
    order = lambda mbs: [rows_of(mbs[k]) for k in range(len(mbs))]  # noqa: E731
    a = order(RolloutMinibatches(rollout, 2, 2, mu=3, seed=11))
    assert a == order(RolloutMinibatches(rollout, 2, 2, mu=3, seed=11))  # a resumed run replays the same order
    assert a != order(RolloutMinibatches(rollout, 2, 2, mu=3, seed=12))
    passes = [a[0:4], a[4:8], a[8:12]]
    assert len({tuple(map(tuple, p)) for p in passes}) > 1  # reshuffled between passes


def test_single_minibatch_is_the_whole_rollout_every_pass():
    rollout = make_rollout(3, 4)
    mbs = RolloutMinibatches(rollout, 4, 3, mu=2, seed=0)
    assert len(mbs) == 2 and rows_of(mbs[0]) == rows_of(mbs[1]) == list(range(12))


@pytest.mark.parametrize("process", [False, True])
def test_trimming_keeps_every_real_token(process):
    G = 2
    rollout = make_rollout(6, G, process=process, seed=3)
    T = rollout.completion_mask.shape[1]
    mbs = RolloutMinibatches(rollout, G, 1, mu=1, seed=0)  # one group per mini-batch: the most trimming
    trimmed_somewhere = False
    for k in range(len(mbs)):
        item = mbs[k]
        rows = torch.tensor(rows_of(item))
        t = item["completion_mask"].shape[1]
        width = item["input_ids"].shape[1]
        for name in ("completion_mask", "old_logp", "ref_logp") + (("advantages",) if process else ()):
            assert item[name].shape == (len(rows), t), name
        assert item["attention_mask"].shape == item["input_ids"].shape
        trimmed_somewhere |= t < T or width < rollout.input_ids.shape[1]
        # nothing real was cut: same number of attended tokens, and the tokens themselves in order
        assert item["attention_mask"].sum(-1).equal(rollout.attention_mask[rows].sum(-1))
        for j, r in enumerate(rows.tolist()):
            keep = item["attention_mask"][j].bool()
            assert item["input_ids"][j][keep].equal(rollout.input_ids[r][rollout.attention_mask[r].bool()])
            real = rollout.attention_mask[r, -T:].bool()
            n = int(real.sum())
            assert item["attention_mask"][j, -t:][:n].all() and not item["attention_mask"][j, -t:][n:].any()
            assert item["completion_mask"][j].sum() == rollout.completion_mask[r].sum()
            for name in ("old_logp", "ref_logp") + (("advantages",) if process else ()):
                assert item[name][j, :n].equal(getattr(rollout, name)[r, :n]), name
        # and nothing is left that is padding in every row: first prompt column and last completion column are used
        assert item["attention_mask"][:, 0].any() and item["attention_mask"][:, -1].any()
        if not process:
            assert item["advantages"].equal(rollout.advantages[rows])
    assert trimmed_somewhere


def test_plan_refuses_split_groups():
    with pytest.raises(ValueError, match="do not divide"):
        minibatch_plan(6, 4, 1, seed=0)
