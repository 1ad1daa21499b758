"""grpo.rollout.group.GroupRollout: one rollout on a tiny model with a fake reward source (layout, advantages,
zero-spread groups, old/reference log-probs, bad rewards stopped at scoring) and the placement of process
rewards on tokens (grpo.rollout.steps)."""

from __future__ import annotations

import copy

import pytest
import torch

from grpo.algo.advantages import OutcomeAdvantages, ProcessAdvantages, outcome_advantages
from grpo.algo.loss import GRPOLoss
from grpo.rewards.base import RewardError
from grpo.rollout.engine import KVCacheEngine
from grpo.rollout.group import GroupRollout
from grpo.rollout.steps import step_reward_tensors, token_ends
from grpo.rollout.logprobs import completion_logprobs
from grpo.tasks import ArithmeticTask, Problem
from grpo_testkit import tiny_lm

G = 4


class FakeReward:
    """Rewards fixed in advance (outcome) or computed from the text by `step_fn` (process); records calls."""

    def __init__(self, outcome=None, step_fn=None):
        self._outcome, self.step_fn, self.calls = outcome, step_fn, []

    def outcome(self, problems, completions):
        self.calls.append((list(problems), list(completions)))
        return torch.tensor(self._outcome, dtype=torch.float32)

    def steps(self, problems, completions):
        self.calls.append((list(problems), list(completions)))
        return [self.step_fn(i, text) for i, text in enumerate(completions)]


@pytest.fixture(scope="module")
def lm():
    return tiny_lm(seed=1)


@pytest.fixture(scope="module")
def task():
    return ArithmeticTask(train_size=30, heldout_size=5, seed=4)


@pytest.fixture(scope="module")
def problems(task):
    return task.train_problems()[:3]


def collect(lm, task, problems, reward, *, reference=None, seed=0, supervision="outcome", scale_rewards=True, adv_eps=1e-4,
            max_new_tokens=10, temperature=1.0, need_old_logp=False, **kwargs):
    """(batch, rollout/* and perf/* stats, samples) of one GroupRollout call."""
    model, tok = lm
    estimator = (OutcomeAdvantages if supervision == "outcome" else ProcessAdvantages)(scale=scale_rewards, eps=adv_eps)
    rollout = GroupRollout(KVCacheEngine(max_new_tokens=max_new_tokens, temperature=temperature), estimator, group_size=G,
                           reward=reward, task=task, tokenizer=tok, **kwargs)
    out = rollout(model, reference, problems, torch.Generator().manual_seed(seed), need_old_logp=need_old_logp)
    return out.batch, out.stats | out.timings, out.samples


REWARDS = [1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.5, 0.0, 0.0, 0.0, 0.0]  # groups 0 and 2 have no spread


def test_group_layout_and_texts(lm, task, problems):
    model, tok = lm
    reward = FakeReward(REWARDS)
    batch, stats, samples = collect(lm, task, problems, reward, skip_zero_spread=False)
    N = len(problems) * G
    assert len(batch) == N and batch.input_ids.shape == batch.attention_mask.shape
    T = batch.completion_mask.shape[1]
    P = batch.input_ids.shape[1] - T
    enc = tok([p.prompt for p in problems], padding=True, return_tensors="pt", add_special_tokens=False)
    assert P == enc.input_ids.shape[1]
    # each prompt's group is contiguous: row r holds problem r // G, prompt left-padded as the tokenizer pads it
    assert batch.input_ids[:, :P].equal(enc.input_ids.repeat_interleave(G, 0))
    assert batch.attention_mask[:, :P].equal(enc.attention_mask.repeat_interleave(G, 0))
    # completion: attention covers exactly the completion mask (right-padded), no zero-spread skipping here
    assert batch.completion_mask.equal(batch.attention_mask[:, P:].bool())
    texts = tok.batch_decode(batch.input_ids[:, P:], skip_special_tokens=True)
    called_problems, called_texts = reward.calls[0]
    assert called_problems == [p for p in problems for _ in range(G)]
    assert called_texts == texts
    assert [s[1] for s in samples] == texts and [s[2] for s in samples] == REWARDS
    assert stats["reward_mean"] == pytest.approx(sum(REWARDS) / N)
    assert stats["accuracy"] == pytest.approx(sum(task.verify(p, t) for p, t in zip(called_problems, texts)) / N)
    lengths = batch.completion_mask.sum(-1).float()
    assert stats["completion_len"] == pytest.approx(lengths.mean().item())


@pytest.mark.parametrize("scale", [True, False])
def test_outcome_advantages_of_the_rewards(lm, task, problems, scale):
    batch, stats, _ = collect(lm, task, problems, FakeReward(REWARDS), scale_rewards=scale, adv_eps=1e-3)
    want = outcome_advantages(torch.tensor(REWARDS), G, scale=scale, eps=1e-3)
    assert batch.advantages.shape == (len(problems) * G,)
    torch.testing.assert_close(batch.advantages, want)
    assert (batch.advantages[:4] == 0).all() and (batch.advantages[8:] == 0).all()
    assert (batch.advantages[4:8] != 0).all()


def test_skip_zero_spread_masks_exactly_the_flat_groups(lm, task, problems):
    skipped, stats, _ = collect(lm, task, problems, FakeReward(REWARDS), skip_zero_spread=True)
    kept, stats_kept, _ = collect(lm, task, problems, FakeReward(REWARDS), skip_zero_spread=False)
    assert skipped.input_ids.equal(kept.input_ids)  # same seed, same rollout
    flat = torch.tensor([True] * 4 + [False] * 4 + [True] * 4)
    assert not skipped.completion_mask[flat].any()
    assert skipped.completion_mask[~flat].equal(kept.completion_mask[~flat])
    assert kept.completion_mask.sum(-1).min() >= 1
    assert stats["zero_spread_frac"] == pytest.approx(2 / 3) and stats_kept["zero_spread_frac"] == pytest.approx(2 / 3)


def perturbed_copy(model, scale=0.05, seed=9):
    """A reference that differs from `model` (k3's gradient is 0 where pi_theta == pi_ref)."""
    reference = copy.deepcopy(model)
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(scale * torch.randn(p.shape, generator=torch.Generator().manual_seed(seed)))
    return reference


def test_flat_groups_keep_their_kl_term_when_the_loss_has_one(lm, task, problems):
    """beta > 0 (a reference is given): skip_zero_spread leaves the flat groups in the loss, advantage 0, and their
    -beta*KL gradient reaches the policy; beta = 0 (no reference): it leaves them out, which changes nothing but
    the normalisation (their loss is 0)."""
    model, _ = lm
    flat = torch.tensor([True] * 4 + [False] * 4 + [True] * 4)  # REWARDS: groups 0 and 2 have no spread
    with_kl, stats, _ = collect(lm, task, problems, FakeReward(REWARDS), reference=perturbed_copy(model), skip_zero_spread=True)
    no_kl, stats_no_kl, _ = collect(lm, task, problems, FakeReward(REWARDS), reference=None, skip_zero_spread=True)
    T = with_kl.completion_mask.shape[1]
    assert with_kl.input_ids.equal(no_kl.input_ids)  # same seed, same rollout
    assert with_kl.completion_mask.equal(with_kl.attention_mask[:, -T:].bool())  # every row's tokens in the loss
    assert (with_kl.advantages[flat] == 0).all()
    assert not no_kl.completion_mask[flat].any() and no_kl.completion_mask[~flat].any()
    assert stats["groups_updated"] == 3.0 and stats_no_kl["groups_updated"] == 1.0

    # the flat rows alone: loss = beta * mean KL (advantage 0), and its gradient reaches the policy
    part = with_kl.rows(flat.nonzero().flatten())
    mask = part["completion_mask"]
    model.zero_grad(set_to_none=True)
    logp, _ = completion_logprobs(model, part["input_ids"], part["attention_mask"], mask.shape[1])
    loss, loss_stats = GRPOLoss(beta=0.04)(logp, None, part["ref_logp"], part["advantages"], mask)
    loss.backward()
    grad = torch.sqrt(sum((p.grad ** 2).sum() for p in model.parameters() if p.grad is not None))
    model.zero_grad(set_to_none=True)
    assert mask.any() and loss_stats["kl"] > 0
    assert grad > 1e-6


def test_all_groups_flat_leaves_nothing_to_learn(lm, task, problems):
    batch, stats, _ = collect(lm, task, problems, FakeReward([0.0] * 12))
    assert not batch.completion_mask.any() and (batch.advantages == 0).all()
    assert stats["zero_spread_frac"] == 1.0 and stats["adv_std"] == 0.0


def test_old_and_reference_logprobs(lm, task, problems):
    model, tok = lm
    batch, stats, _ = collect(lm, task, problems, FakeReward(REWARDS), need_old_logp=False, reference=None)
    assert batch.old_logp is None and batch.ref_logp is None

    reference = copy.deepcopy(model)
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(9)))
    batch, _, _ = collect(lm, task, problems, FakeReward(REWARDS), need_old_logp=True, reference=reference, logprob_chunk=5)
    T = batch.completion_mask.shape[1]
    with torch.no_grad():
        old, _ = completion_logprobs(model, batch.input_ids, batch.attention_mask, T)
        ref, _ = completion_logprobs(reference, batch.input_ids, batch.attention_mask, T)
    assert batch.old_logp.shape == batch.ref_logp.shape == (len(batch), T)
    m = batch.attention_mask[:, -T:].bool()
    torch.testing.assert_close(batch.old_logp[m], old[m], atol=1e-5, rtol=0)
    torch.testing.assert_close(batch.ref_logp[m], ref[m], atol=1e-5, rtol=0)
    assert not torch.allclose(batch.old_logp[m], batch.ref_logp[m])
    assert model.training is False  # restored to the mode it came in


def test_rollout_is_a_function_of_the_generator_seed(lm, task, problems):
    a, _, _ = collect(lm, task, problems, FakeReward(REWARDS), seed=3)
    b, _, _ = collect(lm, task, problems, FakeReward(REWARDS), seed=3)
    c, _, _ = collect(lm, task, problems, FakeReward(REWARDS), seed=4)
    assert a.input_ids.equal(b.input_ids) and a.completion_mask.equal(b.completion_mask)
    assert a.input_ids.shape != c.input_ids.shape or not a.input_ids.equal(c.input_ids)


# ---- process supervision ------------------------------------------------------------------------
def test_step_reward_tensors_hand_example(lm):
    """Char tokenizer: one token per character, so a step's last char index is its token index."""
    _, tok = lm
    problem = Problem("Q:7*3+12=", "33", "7*3=21;21+12=33;A:33")
    task = ArithmeticTask(train_size=1, heldout_size=1)
    ids = lambda s: tok(s, add_special_tokens=False).input_ids  # noqa: E731
    eos, pad = tok.eos_token_id, tok.pad_token_id
    right = "7*3=21;21+12=33;A:33"
    wrong = "7*3=21;21+12=34;A:34"
    rows = [
        ids(right) + [eos],
        ids(wrong) + [eos],
        [eos],  # empty completion: no step
        ids("7*3=21;") + [tok.unk_token_id] + ids("A:21") + [eos],  # a token that decodes to nothing shifts indices
    ]
    T = max(map(len, rows)) + 2
    completion_ids = torch.full((len(rows), T), pad)
    completion_mask = torch.zeros(len(rows), T, dtype=torch.bool)
    for i, r in enumerate(rows):
        completion_ids[i, : len(r)] = torch.tensor(r)
        completion_mask[i, : len(r)] = True
    texts = tok.batch_decode(completion_ids, skip_special_tokens=True)
    assert texts == [right, wrong, "", "7*3=21;A:21"]
    steps = [task.step_rewards(problem, t) for t in texts]
    assert steps[0] == [(6, 1.0), (15, 1.0), (19, 1.0)]
    assert steps[1] == [(6, 1.0), (15, 0.0), (19, 0.0)]
    assert steps[2] == []
    assert steps[3] == [(6, 1.0), (10, 0.0)]

    # ended all False (as if cut by the length limit): every step stays on its last character's token
    rewards, ends = step_reward_tensors(tok, completion_ids, completion_mask, steps, ended=torch.zeros(len(rows), dtype=torch.bool))
    assert rewards.shape == ends.shape == (len(rows), T) and ends.dtype == torch.bool
    want_ends = {0: [6, 15, 19], 1: [6, 15, 19], 2: [], 3: [6, 11]}  # row 3: <unk> at token 7 shifts 'A:21' by one (char 10 -> token 11)
    for i, positions in want_ends.items():
        assert ends[i].nonzero().flatten().tolist() == positions, i
    assert rewards[0, [6, 15, 19]].tolist() == [1.0, 1.0, 1.0]
    assert rewards[1, [6, 15, 19]].tolist() == [1.0, 0.0, 0.0]
    assert rewards[3, [6, 11]].tolist() == [1.0, 0.0]
    assert rewards[~ends].abs().sum() == 0
    assert token_ends(tok, rows[3][:-1]) == [1, 2, 3, 4, 5, 6, 7, 7, 8, 9, 10, 11]
    # the rows did stop with EOS: each row's last step then ends on its EOS token (grpo.rollout.steps, Endings)
    _, ends = step_reward_tensors(tok, completion_ids, completion_mask, steps, ended=torch.ones(len(rows), dtype=torch.bool))
    assert [ends[i].nonzero().flatten().tolist() for i in range(len(rows))] == [[6, 15, 20], [6, 15, 20], [], [6, 12]]


def test_process_supervision_rollout(lm, task, problems):
    """One step per completion at its last character, reward 0/1 by row: advantages are the group-normalised
    step rewards on every token up to that character's token (up to the EOS in a row that stopped), 0 after it."""
    model, tok = lm
    row_reward = [1.0, 0.0, 1.0, 0.0] + [1.0] * 4 + [0.0, 1.0, 1.0, 1.0]
    reward = FakeReward(step_fn=lambda i, text: [(len(text) - 1, row_reward[i])] if text else [])
    batch, stats, _ = collect(lm, task, problems, reward, supervision="process", skip_zero_spread=True, adv_eps=0.0)
    texts = reward.calls[0][1]
    T = batch.completion_mask.shape[1]
    assert batch.advantages.shape == (len(batch), T)
    comp_ids = batch.input_ids[:, -T:]
    for g in range(len(problems)):
        rows = [g * G + j for j in range(G) if texts[g * G + j]]
        r = torch.tensor([row_reward[i] for i in rows])
        norm = (r - r.mean()) / r.std() if len(rows) > 1 and r.std() > 0 else torch.zeros(len(rows))
        for i in range(g * G, (g + 1) * G):
            if i not in rows:
                assert (batch.advantages[i] == 0).all()
                continue
            ids = comp_ids[i][batch.attention_mask[i, -T:].bool()].tolist()
            ends = token_ends(tok, ids)
            end_tok = next(k for k, e in enumerate(ends) if e >= len(texts[i]))
            if ids[-1] == tok.eos_token_id:  # stopped: the last step's reward extends to the EOS token
                end_tok = len(ids) - 1
            want = torch.zeros(T)
            want[: end_tok + 1] = norm[rows.index(i)]
            torch.testing.assert_close(batch.advantages[i], want, atol=1e-5, rtol=0)
        group_flat = float(norm.abs().sum()) == 0
        assert bool(batch.completion_mask[g * G : (g + 1) * G].any()) == (not group_flat)
    assert not batch.completion_mask[4:8].any()  # group 1: every step reward is 1.0
    assert batch.completion_mask.any() and (batch.advantages != 0).any()  # the other groups do carry a signal


# ---- bad rewards stop at scoring ---------------------------------------------------------------------
class BadReward(FakeReward):
    name = "my_reward"


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "1.0", None])
@pytest.mark.parametrize("how_many", ["one", "all"])
def test_bad_reward_stops_the_run_at_scoring_naming_it(lm, task, problems, bad, how_many):
    values = [bad] * 12 if how_many == "all" else [1.0, 0.0] * 5 + [bad, 0.5]
    reward = BadReward(values)
    reward.outcome = lambda problems, completions: values  # a plain list, as a user's function may return
    model = lm[0]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(RewardError, match=r"reward my_reward\.outcome returned (12|1) value\(s\) that are not finite numbers") as err:
        collect(lm, task, problems, reward)
    assert repr(bad) in str(err.value) and "rollout.invalid_reward=zero" in str(err.value)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing reached the weights


def test_bad_reward_counts_as_zero_when_configured(lm, task, problems):
    values = [1.0, 0.0, 1.0, 0.0] + [float("nan")] * 4 + [0.0, 1.0, 1.0, 1.0]
    reward = BadReward(values)
    reward.outcome = lambda problems, completions: values
    batch, stats, samples = collect(lm, task, problems, reward, invalid_reward="zero", adv_eps=0.0)
    assert stats["invalid_rewards"] == 4.0
    assert [r for _, _, r in samples][4:8] == [0.0] * 4  # group 1: all NaN -> all 0: no spread, left out
    assert not batch.completion_mask[4:8].any() and torch.isfinite(batch.advantages).all()


def test_wrong_number_of_rewards_is_an_error(lm, task, problems):
    reward = BadReward([1.0] * 5)
    with pytest.raises(RewardError, match="returned 5 values for 12 completions"):
        collect(lm, task, problems, reward)


def test_process_rewards_are_checked_too(lm, task, problems):
    reward = BadReward(step_fn=lambda i, text: [(0, float("nan"))] if i == 3 else [(0, 1.0)])
    with pytest.raises(RewardError, match=r"my_reward\.steps returned 1 value"):
        collect(lm, task, problems, reward, supervision="process")


def test_verify_must_return_a_bool(lm, problems):
    class LooseTask(ArithmeticTask):
        def verify(self, problem, completion):
            return "yes"

    with pytest.raises(TypeError, match=r"LooseTask\.verify must return a bool.*str 'yes'"):
        collect(lm, LooseTask(train_size=30, heldout_size=5, seed=4), problems, FakeReward([1.0] * 12))


@pytest.mark.parametrize("outcome_scale", [None, "group"])
def test_process_min_gets_the_verifier_outcome_apart(lm, task, problems, outcome_scale):
    """reward=prm_verifier under supervision=process_min: the rollout passes the outcome-only components' sum to the
    estimator as `outcome` (a term added to every return, or with advantage.outcome_scale its own advantage, with the
    components' weights), and the step tensors hold the step component's rewards only."""
    from grpo.algo.process_min import ProcessMinAdvantages, process_min_advantages
    from grpo.rewards.combine import WeightedRewards
    from grpo.rollout.steps import step_reward_tensors

    model, tok = lm
    verdict = [1.0, 0.0] * 6  # the "verifier": right / wrong alternately
    prm = FakeReward(step_fn=lambda i, text: [(0, 0.5), (len(text) - 1, 0.25 * (i % 3))] if len(text) > 1 else [])
    reward = WeightedRewards({"model": {"fn": prm}, "verifier": {"fn": lambda problems, completions: verdict, "weight": 2.0}})
    estimator = ProcessMinAdvantages(scale="none", eps=0.0, outcome_scale=outcome_scale)
    rollout = GroupRollout(KVCacheEngine(max_new_tokens=10), estimator, group_size=G, reward=reward, task=task,
                           tokenizer=tok, skip_zero_spread=False)
    out = rollout(model, None, problems, generator=torch.Generator().manual_seed(0))
    texts = prm.calls[0][1]
    T = out.batch.completion_mask.shape[1]
    comp = out.batch.input_ids[:, -T:]
    mask = out.batch.attention_mask[:, -T:].bool()
    ended = torch.tensor(out.ended)
    steps = [[(0, 0.5), (len(t) - 1, 0.25 * (i % 3))] if len(t) > 1 else [] for i, t in enumerate(texts)]
    step_rewards, ends = step_reward_tensors(tok, comp.cpu(), mask.cpu(), steps, ended=ended)
    want = process_min_advantages(step_rewards, ends, G, scale="none", eps=0.0, outcome=2.0 * torch.tensor(verdict),
                                  outcome_scale=outcome_scale, weights=(1.0, 2.0))
    torch.testing.assert_close(out.batch.advantages, want)
    if outcome_scale is not None:  # the verifier's weight 2 is on its group-std advantage: +-2 x 0.7071 per right / wrong pair
        alone = process_min_advantages(step_rewards, ends, G, scale="none", eps=0.0, outcome=2.0 * torch.tensor(verdict),
                                       outcome_scale=outcome_scale, weights=(1.0, 1.0))
        assert not torch.allclose(want, alone)
    assert out.batch.advantages.abs().sum() > 0


def test_decoupled_outcome_needs_a_prm_and_an_outcome_beside_it(lm, task):
    """advantage.outcome_scale set with a reward that has no outcome term apart from step rewards (a PRM alone, or a
    verifier alone) fails when the rollout is built, before the first GRPO step (the initial reward model is built
    and cached by then, so a rerun reuses it), and says what to use."""
    from grpo.algo.process_min import ProcessMinAdvantages
    from grpo.rewards.combine import WeightedRewards

    estimator = ProcessMinAdvantages(outcome_scale="group")
    prm = FakeReward(step_fn=lambda i, text: [(0, 0.5)])
    verifier = lambda problems, completions: [1.0] * len(completions)  # noqa: E731
    for reward in (prm, WeightedRewards({"verifier": {"fn": verifier}})):
        with pytest.raises(ValueError, match=r"advantage.outcome_scale='group'.*reward=prm_verifier"):
            GroupRollout(KVCacheEngine(max_new_tokens=4), estimator, group_size=G, reward=reward, task=task, tokenizer=lm[1])
    both = WeightedRewards({"model": {"fn": prm}, "verifier": {"fn": verifier}})
    GroupRollout(KVCacheEngine(max_new_tokens=4), estimator, group_size=G, reward=both, task=task, tokenizer=lm[1])


@pytest.mark.parametrize("eos_credit", [True, False])
def test_eos_credit_puts_the_final_steps_reward_on_the_eos_token_or_leaves_it_at_its_last_character(lm, task, problems, eos_credit):
    """grpo.eos_credit: with it, in rows that stopped with EOS the final step's reward sits on the EOS token (so its
    advantage is the final step's); without it every step stays on its last character's token and the EOS token's
    advantage is 0 (process supervision, no normalisation, so advantages are the plain sums of later step rewards)."""
    model, tok = lm
    reward = FakeReward(step_fn=lambda i, text: [(0, 0.5), (len(text) - 1, 0.1 * (1 + i % 4))] if len(text) > 1 else [])
    batch, _, _ = collect(lm, task, problems, reward, supervision="process", scale_rewards=False, adv_eps=0.0,
                          max_new_tokens=24, skip_zero_spread=False, eos_credit=eos_credit)
    T = batch.completion_mask.shape[1]
    comp, mask = batch.input_ids[:, -T:], batch.attention_mask[:, -T:].bool()
    stopped = [bool((row[m] == tok.eos_token_id).any()) for row, m in zip(comp, mask)]
    checked = [i for i, row_stopped in enumerate(stopped) if row_stopped and mask[i].sum() >= 3]
    assert checked, "the fixture must have rows that wrote EOS after a few tokens"
    for i in checked:
        eos = int(mask[i].nonzero().max())
        assert comp[i, eos] == tok.eos_token_id
        if eos_credit:
            assert batch.advantages[i, eos] == batch.advantages[i, eos - 1] != 0
        else:
            assert batch.advantages[i, eos] == 0 and batch.advantages[i, eos - 1] != 0
