"""grpo.rollout.sampler.sample (and completion_logprobs on its output): greedy decoding equals
transformers' generate, group layout and seeding, EOS/truncation bookkeeping, log-prob consistency."""

from __future__ import annotations

import pytest
import torch

from grpo.rollout.logprobs import completion_logprobs
from grpo.rollout.sampler import position_ids_from_mask, sample
from grpo_testkit import tiny_lm

PROMPTS = ["Q:1+2=", "Q:12*3+45=", "Q:9-1=", "Q:99-12+7=", "Q:4*4=", "Q:150-99+3="]


@pytest.fixture(scope="module")
def lm():
    return tiny_lm(seed=0)


@pytest.fixture(scope="module")
def enc(lm):
    _, tok = lm
    return tok(PROMPTS, padding=True, return_tensors="pt", add_special_tokens=False)


def run(lm, enc, **kwargs):
    model, tok = lm
    kwargs.setdefault("max_new_tokens", 12)
    return sample(
        model, enc.input_ids, enc.attention_mask, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **kwargs
    )


def check_completion_layout(out, eos, pad, max_new_tokens):
    """Invariants of Completions: mask = tokens up to and including EOS; pad after; truncated = no EOS."""
    lengths = out.mask.sum(-1)
    assert out.ids.shape == out.mask.shape and out.ids.shape[1] == int(lengths.max())
    assert out.mask.dtype == torch.bool and out.truncated.dtype == torch.bool
    for ids, mask, length, truncated in zip(out.ids, out.mask, lengths.tolist(), out.truncated):
        assert length >= 1
        assert mask.tolist() == [True] * length + [False] * (len(mask) - length)  # right-padded, contiguous
        assert (ids[length:] == pad).all()
        real = ids[:length].tolist()
        if truncated:
            assert length == max_new_tokens and eos not in real
        else:
            assert real[-1] == eos and eos not in real[:-1]  # the first EOS ends the row and is in the mask


def test_position_ids_ignore_left_padding():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]])
    assert position_ids_from_mask(mask).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4], [0, 0, 0, 0, 0]]


@pytest.mark.parametrize("max_new_tokens", [1, 12])
def test_greedy_equals_hf_generate(lm, enc, max_new_tokens):
    model, tok = lm
    assert len(set(enc.attention_mask.sum(-1).tolist())) > 1  # prompts of different lengths, left-padded
    out = run(lm, enc, temperature=0.0, max_new_tokens=max_new_tokens)
    with torch.no_grad():
        ref = model.generate(
            input_ids=enc.input_ids,
            attention_mask=enc.attention_mask,
            do_sample=False,
            max_new_tokens=max_new_tokens,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
    ref = ref[:, enc.input_ids.shape[1] :]
    assert out.ids.shape == ref.shape
    assert out.ids.tolist() == ref.tolist()
    check_completion_layout(out, tok.eos_token_id, tok.pad_token_id, max_new_tokens)
    if max_new_tokens == 12:  # the case is only interesting if rows stop at different times
        assert out.truncated.any() and (~out.truncated).any()
        assert len(set(out.mask.sum(-1).tolist())) > 2


def test_greedy_row_does_not_depend_on_its_batch(lm, enc):
    model, tok = lm
    batched = run(lm, enc, temperature=0.0)
    for i, text in enumerate(PROMPTS):
        alone = tok([text], return_tensors="pt", add_special_tokens=False)
        single = run(lm, alone, temperature=0.0)
        n = int(single.mask.sum())
        assert batched.ids[i, :n].tolist() == single.ids[0, :n].tolist()
        assert int(batched.mask[i].sum()) == n and bool(batched.truncated[i]) == bool(single.truncated[0])


def test_num_samples_gives_group_contiguous_rows(lm, enc):
    G, B = 3, len(PROMPTS)
    greedy = run(lm, enc, temperature=0.0)
    grouped = run(lm, enc, temperature=0.0, num_samples=G)
    assert grouped.ids.shape[0] == grouped.mask.shape[0] == grouped.truncated.shape[0] == B * G
    for row in range(B * G):  # row r belongs to prompt r // G
        assert grouped.ids[row].tolist() == greedy.ids[row // G].tolist()
        assert grouped.mask[row].equal(greedy.mask[row // G])
    # near-zero temperature and a tiny nucleus both reduce sampling to greedy, through the sampling code path
    for kwargs in (dict(temperature=1e-4), dict(temperature=1.0, top_p=1e-6)):
        cold = run(lm, enc, num_samples=G, generator=torch.Generator().manual_seed(0), **kwargs)
        assert cold.ids.tolist() == grouped.ids.tolist(), kwargs


def test_sampling_is_reproducible_with_a_seeded_generator(lm, enc):
    G, B = 4, len(PROMPTS)
    a = run(lm, enc, temperature=1.0, num_samples=G, generator=torch.Generator().manual_seed(123))
    b = run(lm, enc, temperature=1.0, num_samples=G, generator=torch.Generator().manual_seed(123))
    c = run(lm, enc, temperature=1.0, num_samples=G, generator=torch.Generator().manual_seed(124))
    assert a.ids.shape[0] == B * G
    assert a.ids.equal(b.ids) and a.mask.equal(b.mask) and a.truncated.equal(b.truncated)
    assert a.ids.shape != c.ids.shape or not a.ids.equal(c.ids)
    # the samples of one group differ from each other (it is sampling, and the cache is shared correctly)
    assert len({tuple(r.tolist()) for r in a.ids[:G]}) > 1


def test_sampled_rows_eos_and_truncation(lm):
    model, tok = lm
    enc = tok(PROMPTS * 2, padding=True, return_tensors="pt", add_special_tokens=False)
    out = run(lm, enc, temperature=1.0, num_samples=4, max_new_tokens=8, generator=torch.Generator().manual_seed(0))
    check_completion_layout(out, tok.eos_token_id, tok.pad_token_id, 8)
    assert out.truncated.any() and (~out.truncated).any()


def test_completion_logprobs_of_greedy_tokens_are_the_max(lm, enc):
    """Greedy consistency: the KV-cache decode picked the argmax of the full-sequence distribution."""
    model, tok = lm
    out = run(lm, enc, temperature=0.0)
    T = out.ids.shape[1]
    input_ids = torch.cat([enc.input_ids, out.ids], dim=1)
    attention_mask = torch.cat([enc.attention_mask, out.mask.long()], dim=1)
    with torch.no_grad():
        logp, entropy = completion_logprobs(model, input_ids, attention_mask, T, temperature=1.0, with_entropy=True)
        logits = model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids_from_mask(attention_mask)
        ).logits
    assert logp.shape == entropy.shape == (len(PROMPTS), T) and logp.dtype == torch.float32
    full = torch.log_softmax(logits[:, -T - 1 : -1].float(), -1)  # position t predicts token t+1
    m = out.mask
    torch.testing.assert_close(logp[m], full.max(-1).values[m], atol=1e-5, rtol=0)
    torch.testing.assert_close(entropy[m], -(full.exp() * full).sum(-1)[m], atol=1e-5, rtol=0)
    # temperature divides the logits
    logp_t, _ = completion_logprobs(model, input_ids, attention_mask, T, temperature=0.5)
    want = torch.log_softmax(logits[:, -T - 1 : -1].float() / 0.5, -1).gather(-1, out.ids[..., None]).squeeze(-1)
    torch.testing.assert_close(logp_t[m], want[m], atol=1e-5, rtol=0)


def test_completion_logprobs_do_not_depend_on_left_padding(lm, enc):
    model, tok = lm
    out = run(lm, enc, temperature=1.0, num_samples=1, generator=torch.Generator().manual_seed(5))
    T = out.ids.shape[1]
    input_ids = torch.cat([enc.input_ids, out.ids], dim=1)
    attention_mask = torch.cat([enc.attention_mask, out.mask.long()], dim=1)
    with torch.no_grad():
        batched, _ = completion_logprobs(model, input_ids, attention_mask, T)
        for i in range(len(PROMPTS)):
            n = int(out.mask[i].sum())
            prompt = enc.input_ids[i, enc.attention_mask[i].bool()]
            row = torch.cat([prompt, out.ids[i, :n]])[None]  # no padding at all
            alone, _ = completion_logprobs(model, row, torch.ones_like(row), n)
            torch.testing.assert_close(batched[i, :n], alone[0], atol=1e-5, rtol=0)
