"""Tool output is context, not action: in a rollout with tools the completion_mask leaves the result tokens out
(the attention_mask keeps them), so the loss, under every aggregation, ignores their log-probs and divides by
the policy's tokens; the reward sees the whole transcript; rollout/tool/* and perf/tool_time_s are logged
only with a toolbox; the samples panel marks the results."""

from __future__ import annotations

import pytest
import torch

from grpo.algo.advantages import OutcomeAdvantages, ProcessAdvantages
from grpo.algo.loss import GRPOLoss
from grpo.rollout.engine import KVCacheEngine, sample_problems
from grpo.rollout.group import GroupRollout
from grpo.rollout.tool_decode import RESULT_MARKS
from grpo.tasks import ArithmeticTask
from grpo.tools.toolbox import Toolbox
from grpo_testkit import tiny_lm
from tool_fakes import CountTool, EchoFormat

G = 4
M = 16


class RecordingReward:
    """Outcome reward = the completion's length in characters (spread in every group); records the texts it saw."""

    def __init__(self):
        self.texts = []

    def outcome(self, problems, completions):
        self.texts += list(completions)
        return torch.tensor([float(len(c)) for c in completions])

    def steps(self, problems, completions):  # one step per completion, ending at its last character
        self.texts += list(completions)
        return [[(len(c) - 1, float(len(c)))] if c else [] for c in completions]


@pytest.fixture(scope="module")
def lm():
    return tiny_lm(seed=1)


@pytest.fixture(scope="module")
def problems():
    return ArithmeticTask(train_size=30, heldout_size=5, seed=4).train_problems()[:4]


def engine(tok, tools: bool):
    box = Toolbox([CountTool(2)], EchoFormat("="), max_calls=3, max_result_tokens=6).bind(tok) if tools else None
    return KVCacheEngine(max_new_tokens=M, tools=box)


def rollout(lm, problems, tools: bool, supervision="outcome", **kwargs):
    model, tok = lm
    reward = RecordingReward()
    estimator = OutcomeAdvantages() if supervision == "outcome" else ProcessAdvantages()
    group = GroupRollout(engine(tok, tools), estimator, group_size=G, reward=reward, tokenizer=tok,
                         task=ArithmeticTask(train_size=30, heldout_size=5, seed=4), **kwargs)
    out = group(model, None, problems, torch.Generator().manual_seed(5), need_old_logp=True)
    return out, reward


def engine_tool_mask(lm, problems) -> torch.Tensor:
    """[N, T] the engine's own tool_mask for the rollout above (the same seed: the same completions)."""
    model, tok = lm
    sampler = engine(tok, tools=True)
    sampler.load_weights(model)
    _, _, out = sample_problems(sampler, tok, problems, device="cpu", num_samples=G, generator=torch.Generator().manual_seed(5))
    return out.tool_mask


def test_completion_mask_leaves_tool_results_out_and_attention_keeps_them(lm, problems):
    out, _ = rollout(lm, problems, tools=True, skip_zero_spread=False)
    batch = out.batch
    tools = engine_tool_mask(lm, problems)
    T = batch.completion_mask.shape[1]
    assert tools.shape == batch.completion_mask.shape and tools.any()
    assert not (batch.completion_mask & tools).any()  # no row left out here: completion = the policy's tokens
    assert torch.equal(batch.completion_mask | tools, batch.attention_mask[:, -T:].bool())
    assert (batch.completion_mask.sum(-1) <= M).all()
    assert out.stats["completion_len"] == pytest.approx(batch.completion_mask.sum(-1).float().mean().item())


@pytest.mark.parametrize("aggregation", ["sequence", "token", "constant"])
def test_the_loss_ignores_tool_tokens_and_divides_by_policy_tokens(lm, problems, aggregation):
    out, _ = rollout(lm, problems, tools=True, skip_zero_spread=False)
    batch = out.batch
    tools = engine_tool_mask(lm, problems)
    assert tools.any()
    loss_fn = GRPOLoss(beta=0.0, epsilon=0.2, aggregation=aggregation, max_completion_len=M)
    torch.manual_seed(0)
    logp = batch.old_logp + 0.1 * torch.randn_like(batch.old_logp)
    loss, _ = loss_fn(logp, batch.old_logp, None, batch.advantages, batch.completion_mask)
    moved = logp.masked_fill(tools, -30.0)  # the tool tokens' log-probs changed: nothing else
    assert torch.equal(loss_fn(moved, batch.old_logp, None, batch.advantages, batch.completion_mask)[0], loss)
    if aggregation == "token":  # the hand formula: sum over policy tokens of -min(r A, clip(r) A) / (number of policy tokens)
        ratio = (logp - batch.old_logp).exp()
        A = batch.advantages[:, None].expand_as(ratio)
        per_token = -torch.minimum(ratio * A, ratio.clamp(0.8, 1.2) * A)
        policy = batch.completion_mask
        torch.testing.assert_close(loss, per_token[policy].sum() / policy.sum())


def test_the_reward_sees_the_whole_transcript(lm, problems):
    out, reward = rollout(lm, problems, tools=True)
    _, tok = lm
    batch = out.batch
    T = batch.completion_mask.shape[1]
    full = tok.batch_decode(batch.input_ids[:, -T:], skip_special_tokens=True)  # tool results included
    assert reward.texts == full == [text for _, text, _ in out.samples]
    assert any(RESULT_MARKS[0] in s for s in out.shown)
    assert [s.replace(RESULT_MARKS[0], "").replace(RESULT_MARKS[1], "") for s in out.shown] == full


def test_tool_statistics_are_logged_only_with_tools(lm, problems):
    with_tools, _ = rollout(lm, problems, tools=True)
    without, _ = rollout(lm, problems, tools=False)
    keys = {"tool/calls_per_completion", "tool/call_rate", "tool/errors"}
    assert keys <= set(with_tools.stats) and "tool_time_s" in with_tools.timings
    assert not keys & set(without.stats) and "tool_time_s" not in without.timings
    assert not any(RESULT_MARKS[0] in s for s in without.shown)
    calls = with_tools.stats["tool/calls_per_completion"]
    assert calls > 0 and 0 < with_tools.stats["tool/call_rate"] <= 1 and with_tools.stats["tool/call_rate"] <= calls
    assert with_tools.timings["tool_time_s"] >= 0


def test_process_supervision_places_steps_on_the_transcript(lm, problems):
    """A process reward's steps are found in the whole transcript's text; the advantages reach the policy tokens."""
    out, _ = rollout(lm, problems, tools=True, supervision="process", skip_zero_spread=False)
    batch = out.batch
    assert batch.advantages.shape == batch.completion_mask.shape
    assert (batch.advantages[batch.completion_mask] != 0).any()


def test_dynamic_sampling_keeps_the_tool_mask(lm, problems):
    from grpo.data.rollout_datamodule import Refill

    model, tok = lm
    box = Toolbox([CountTool(2)], EchoFormat("="), max_calls=3, max_result_tokens=6).bind(tok)
    group = GroupRollout(KVCacheEngine(max_new_tokens=M, tools=box), OutcomeAdvantages(), group_size=G,
                         reward=RecordingReward(), tokenizer=tok, task=ArithmeticTask(train_size=30, heldout_size=5, seed=4))
    out = group(model, None, problems[:2], torch.Generator().manual_seed(5), refill=Refill(batches=[problems[2:]], groups=3))
    batch = out.batch
    T = batch.completion_mask.shape[1]
    tools = batch.attention_mask[:, -T:].bool() & ~batch.completion_mask  # attended to, outside the loss: the results
    assert tools.any() and len(batch) == 3 * G
