"""The engine stops at a call, appends the tool's result and resumes from its KV cache (grpo.rollout.tool_decode):
resuming equals sampling from the re-encoded transcript with the same uniforms, on both decode paths (the
Llama-shaped FastDecoder and transformers' forward + DynamicCache); the limits hold; rows stay independent.
The tool and format are fakes in the char tokenizer's alphabet (tests/tool_fakes.py)."""

from __future__ import annotations

import pytest
import torch

from grpo.rollout import fast_decode, sampler
from grpo.rollout.engine import KVCacheEngine
from grpo.rollout.sampler import sample
from grpo.rollout.tool_decode import sample_with_tools
from grpo.tools.toolbox import Toolbox
from grpo_testkit import tiny_lm
from tool_fakes import CountTool, EchoFormat

PROMPTS = ["Q:1+2=", "Q:12*3+45=", "Q:9-1=", "Q:99-12+7="]
M = 24  # max_new_tokens: policy tokens per completion
PATHS = ["fast", "generic"]


@pytest.fixture
def lm(request, monkeypatch):
    model, tok = tiny_lm(seed=1)
    assert fast_decode.supports(model)  # the tiny model is Llama-shaped: the fast path
    if request.param == "generic":  # forced through model.forward + DynamicCache
        monkeypatch.setattr(fast_decode, "supports", lambda model: False)
    return model, tok


def toolbox(tok, close="=", max_calls=3, max_result_tokens=6, repeat=2):
    return Toolbox([CountTool(repeat)], EchoFormat(close), max_calls=max_calls, max_result_tokens=max_result_tokens).bind(tok)


def run(model, tok, box, prompts=PROMPTS, G=4, temperature=1.0, seeds=None, max_new_tokens=M):
    enc = tok(prompts, padding=True, return_tensors="pt", add_special_tokens=False)
    seeds = list(range(100, 100 + len(prompts) * G)) if seeds is None else seeds
    out = sample_with_tools(model, enc.input_ids, enc.attention_mask, box, max_new_tokens=max_new_tokens,
                            eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, temperature=temperature,
                            num_samples=G, row_seeds=seeds if temperature > 0 else None)
    return out, seeds


def result_runs(tool_mask_row) -> list[tuple[int, int]]:
    """[start, end) of each run of tool tokens in one row."""
    runs, start = [], None
    for t, is_tool in enumerate(tool_mask_row.tolist() + [False]):
        if is_tool and start is None:
            start = t
        elif not is_tool and start is not None:
            runs.append((start, t))
            start = None
    return runs


def continue_from_reencoded(model, tok, text, steps, seed, skip, temperature, monkeypatch):
    """Sample `steps` tokens without tools after `text` (prompt + transcript, encoded again from its characters),
    its k-th token drawn with uniform number skip + k of `seed` (the k-th policy token after the cut)."""
    enc = tok([text], return_tensors="pt", add_special_tokens=False)
    draws = lambda seeds, n, device: torch.rand(skip + n, generator=torch.Generator().manual_seed(seed))[None, skip:]
    monkeypatch.setattr(sampler, "row_uniforms", draws)
    out = sample(model, enc.input_ids, enc.attention_mask, max_new_tokens=steps, eos_token_id=tok.eos_token_id,
                 pad_token_id=tok.pad_token_id, temperature=temperature, row_seeds=[seed] if temperature > 0 else None)
    return enc.input_ids[0], out.ids[0, out.mask[0]]


@pytest.mark.parametrize("lm", PATHS, indirect=True)
@pytest.mark.parametrize("temperature", [1.0, 0.0], ids=["sampled", "greedy"])
def test_resumed_generation_equals_generating_from_the_reencoded_text(lm, temperature, monkeypatch):
    model, tok = lm
    G = 4 if temperature > 0 else 1
    # greedy decoding of a random model repeats itself: close calls with a character it writes early
    close = "="
    if temperature == 0:
        plain, _ = run(model, tok, toolbox(tok, max_calls=1), G=1, temperature=0.0)
        close = tok.decode(plain.ids[0, 1:2])
    box = toolbox(tok, close=close)
    out, seeds = run(model, tok, box, G=G, temperature=temperature)
    assert int(out.tool_calls.sum()) >= 2, "the test needs calls"
    prompt_texts = [p for p in PROMPTS for _ in range(G)]
    checked = 0
    for r in range(out.ids.shape[0]):
        row_ids, row_tool = out.ids[r, out.mask[r]], out.tool_mask[r, out.mask[r]]
        runs = result_runs(row_tool)
        for k, (_, end) in enumerate(runs):  # cut just after each tool result
            policy_before = int((~row_tool[:end]).sum())
            upto = runs[k + 1][0] if k + 1 < len(runs) else len(row_ids)  # the policy's tokens up to the next result
            want = row_ids[end:upto]
            text = prompt_texts[r] + tok.decode(row_ids[:end])
            encoded, got = continue_from_reencoded(model, tok, text, M - policy_before, seeds[r], policy_before,
                                                   temperature, monkeypatch)
            assert encoded[-end:].equal(row_ids[:end])  # the re-encoded text is the transcript's tokens
            assert got[: len(want)].equal(want), (r, k)
            checked += 1
    assert checked >= 2


@pytest.mark.parametrize("lm", PATHS, indirect=True)
def test_limits_policy_tokens_calls_and_result_length(lm):
    model, tok = lm
    out, _ = run(model, tok, toolbox(tok, max_calls=2, max_result_tokens=3, repeat=3))
    policy = out.mask & ~out.tool_mask
    assert (policy.sum(-1) <= M).all()
    assert (policy.sum(-1)[out.truncated] == M).all()  # a truncated row used its whole budget of policy tokens
    assert ((out.tool_mask & ~out.mask).sum() == 0)
    assert out.ids.shape[1] > M or out.tool_mask.any()
    for r in range(out.ids.shape[0]):
        runs = result_runs(out.tool_mask[r])
        assert len(runs) <= out.tool_calls[r] <= 2
        assert all(end - start <= 3 for start, end in runs)  # "444;" cut to its first 3 tokens
    assert (out.tool_calls == 2).any(), "some row must reach the limit"
    assert out.tool_seconds.shape == out.tool_calls.shape and (out.tool_seconds >= 0).all()


@pytest.mark.parametrize("lm", PATHS, indirect=True)
def test_results_are_the_tools_answers_to_the_calls(lm):
    model, tok = lm
    box = toolbox(tok)
    out, _ = run(model, tok, box)
    seen = 0
    for r in range(out.ids.shape[0]):
        row_ids, row_tool = out.ids[r, out.mask[r]], out.tool_mask[r, out.mask[r]]
        for start, end in result_runs(row_tool):
            call_text = tok.decode(row_ids[:start], skip_special_tokens=True)
            expected = box.result_ids(box.respond(call_text, 0))
            assert row_ids[start:end].tolist() == expected
            seen += 1
    assert seen >= 2
    assert int(out.tool_errors.sum()) <= int(out.tool_calls.sum())


def test_fast_and_generic_paths_give_the_same_completions(monkeypatch):
    model, tok = tiny_lm(seed=1)
    fast, _ = run(model, tok, toolbox(tok))
    monkeypatch.setattr(fast_decode, "supports", lambda model: False)
    plain, _ = run(model, tok, toolbox(tok))
    assert fast.tool_calls.sum() > 0
    for name in ("ids", "mask", "truncated", "tool_mask", "tool_calls", "tool_errors"):
        assert getattr(fast, name).equal(getattr(plain, name)), name


def test_rows_are_independent_of_their_batch():
    model, tok = tiny_lm(seed=1)
    together, seeds = run(model, tok, toolbox(tok), G=2)
    assert together.tool_calls.sum() > 0
    for i, prompt in enumerate(PROMPTS):
        alone, _ = run(model, tok, toolbox(tok), prompts=[prompt], G=2, seeds=seeds[2 * i : 2 * i + 2])
        for j in range(2):
            r = 2 * i + j
            n = int(together.mask[r].sum())
            assert int(alone.mask[j].sum()) == n
            assert alone.ids[j, :n].equal(together.ids[r, :n]) and alone.tool_mask[j, :n].equal(together.tool_mask[r, :n])


def test_without_calls_the_tool_path_equals_plain_sampling():
    """A close text the model never closes a call with (its parse finds nothing): the same tokens as `sample`."""
    model, tok = tiny_lm(seed=1)

    class Never(EchoFormat):
        def parse(self, text):
            return None

    box = Toolbox([CountTool()], Never("="), max_calls=2, max_result_tokens=4).bind(tok)
    out, seeds = run(model, tok, box)
    enc = tok(PROMPTS, padding=True, return_tensors="pt", add_special_tokens=False)
    plain = sample(model, enc.input_ids, enc.attention_mask, max_new_tokens=M, eos_token_id=tok.eos_token_id,
                   pad_token_id=tok.pad_token_id, num_samples=4, row_seeds=seeds)
    assert out.ids.equal(plain.ids) and out.mask.equal(plain.mask) and out.truncated.equal(plain.truncated)
    assert not out.tool_mask.any() and plain.tool_mask is None


def test_engine_samples_with_its_toolbox_and_without_one_as_before():
    model, tok = tiny_lm(seed=1)
    enc = tok(PROMPTS, padding=True, return_tensors="pt", add_special_tokens=False)
    kwargs = dict(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, num_samples=2, row_seeds=list(range(8)))
    engine = KVCacheEngine(max_new_tokens=M, tools=toolbox(tok))
    engine.load_weights(model)
    with_tools = engine.generate(enc.input_ids, enc.attention_mask, **kwargs)
    assert with_tools.tool_calls.sum() > 0 and with_tools.tool_mask.any()
    engine = KVCacheEngine(max_new_tokens=M)
    engine.load_weights(model)
    without = engine.generate(enc.input_ids, enc.attention_mask, **kwargs)
    plain = sample(model, enc.input_ids, enc.attention_mask, max_new_tokens=M, **kwargs)
    assert without.ids.equal(plain.ids) and without.tool_mask is None
    with pytest.raises(ValueError, match="bind"):
        KVCacheEngine(tools=Toolbox([CountTool()], EchoFormat()))


def test_rows_are_decoded_only_after_a_token_that_could_close_a_call(monkeypatch):
    model, tok = tiny_lm(seed=1)
    box = toolbox(tok)
    asked = []
    respond = box.respond
    monkeypatch.setattr(box, "respond", lambda text, calls_made: asked.append(text) or respond(text, calls_made))
    out, _ = run(model, tok, box)
    assert asked and all(text.endswith("=") for text in asked)  # the toolbox sees only texts ending with a close
    assert len(asked) >= int(out.tool_calls.sum())


def test_sampler_logprobs_are_the_trainers_on_policy_tokens_and_0_on_tool_tokens():
    """Completions.logp with tools (rollout_correction, grpo.old_logp_from=sampler): each policy token's log-prob as the
    trainer computes it over the whole transcript (float32: equal to ~1e-5), 0 on tool-result tokens and padding."""
    from grpo.rollout.logprobs import completion_logprobs

    model, tok = tiny_lm(seed=1)
    out, _ = run(model, tok, toolbox(tok))
    assert out.tool_mask.any() and out.logp is not None
    enc = tok(PROMPTS, padding=True, return_tensors="pt", add_special_tokens=False)
    G = out.ids.shape[0] // len(PROMPTS)
    ids = torch.cat([enc.input_ids.repeat_interleave(G, 0), out.ids], 1)
    mask = torch.cat([enc.attention_mask.repeat_interleave(G, 0), out.mask.long()], 1)
    trainer, _ = completion_logprobs(model, ids, mask, out.ids.shape[1])
    policy = out.policy_mask
    torch.testing.assert_close(out.logp[policy], trainer[policy], atol=1e-4, rtol=0)
    assert (out.logp[~policy] == 0).all()
