"""The fast paths give the same numbers as the plain ones: FastDecoder's logits equal the model's forward bit
for bit (Llama and Qwen2 with grouped KV heads, sdpa and eager attention), sampling through it equals
sampling through model.forward, and group-packed log-probs (and their gradients) equal the padded ones."""

from __future__ import annotations

import pytest
import torch

from grpo.rollout import fast_decode
from grpo.rollout import logprobs as lp
from grpo.rollout.sampler import position_ids_from_mask, sample
from grpo_testkit import tiny_lm

PROMPTS = ["Q:1+2=", "Q:12*3+45=", "Q:9-1=", "Q:99-12+7="]
ARCHS = [dict(family="llama"), dict(family="qwen2", num_heads=4, num_kv_heads=2)]


def build(arch: dict, attn: str):
    arch = dict(arch)
    kv = arch.pop("num_kv_heads", None)
    if kv is None:
        model, tok = tiny_lm(seed=1, **arch)
    else:  # grouped KV heads: rebuild the config with fewer KV heads
        from grpo.models.tiny import TinyArch, build_tiny_model

        _, tok = tiny_lm(seed=1)
        config = TinyArch(hidden_size=32, num_layers=2, intermediate_size=64, max_position_embeddings=128, **arch).config(tok)
        config.num_key_value_heads, config.initializer_range = kv, 0.2
        model = build_tiny_model(config, seed=1).eval()
    model.set_attn_implementation(attn)
    return model, tok


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("arch", ARCHS, ids=lambda a: a["family"])
def test_fast_decoder_logits_equal_the_forward_bit_for_bit(arch, attn):
    model, tok = build(arch, attn)
    assert fast_decode.supports(model)
    enc = tok(PROMPTS, padding=True, return_tensors="pt", add_special_tokens=False)
    B, P = enc.input_ids.shape
    with torch.no_grad():
        pos = position_ids_from_mask(enc.attention_mask)
        out = model(input_ids=enc.input_ids, attention_mask=enc.attention_mask, position_ids=pos, use_cache=True)
        decoder = fast_decode.FastDecoder(model, out.cache, P + 8, repeats=2)  # rows 2i, 2i+1: prompt i
        cache = out.cache
        cache.batch_repeat_interleave(2)
        mask2d = torch.cat([enc.attention_mask, torch.ones(B, 8, dtype=torch.long)], 1).repeat_interleave(2, 0)
        from grpo.rollout.sampler import _decode_mask

        mask4d = _decode_mask(model, enc.attention_mask, 8).repeat_interleave(2, 0)
        next_pos = (pos[:, -1:] + 1).repeat_interleave(2, 0)
        token = torch.arange(2 * B) % 10 + 4
        for step in range(5):
            want = model(input_ids=token[:, None], attention_mask=mask2d[:, : P + step + 1], position_ids=next_pos, cache=cache, use_cache=True)
            cache = want.cache
            got = decoder.step(token, next_pos, mask4d[..., : P + step + 1])
            assert torch.equal(got, want.logits[:, -1])
            token, next_pos = got.argmax(-1), next_pos + 1


@pytest.mark.parametrize("arch", ARCHS, ids=lambda a: a["family"])
def test_sampling_through_the_fast_decoder_equals_the_plain_forward(arch, monkeypatch):
    model, tok = build(arch, "sdpa")
    enc = tok(PROMPTS, padding=True, return_tensors="pt", add_special_tokens=False)

    def run():
        return sample(
            model, enc.input_ids, enc.attention_mask, max_new_tokens=12, eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id, temperature=1.0, generator=torch.Generator().manual_seed(3), num_samples=3,
        )

    fast = run()
    monkeypatch.setattr(fast_decode, "supports", lambda model: False)
    plain = run()
    assert fast.ids.equal(plain.ids) and fast.mask.equal(plain.mask) and fast.truncated.equal(plain.truncated)


@pytest.mark.parametrize("arch", ARCHS, ids=lambda a: a["family"])
@pytest.mark.parametrize("width", [4096, 24])  # one chunk per group, or groups split over several chunks
def test_group_packed_logprobs_equal_padded(arch, width, monkeypatch):
    model, tok = build(arch, "sdpa")
    monkeypatch.setattr(lp, "PACK_WIDTH", width)
    monkeypatch.setattr(lp, "PACK_IF_SAVES", 100.0)  # pack even where it would not pay
    enc = tok(PROMPTS, padding=True, return_tensors="pt", add_special_tokens=False)
    G = 4
    out = sample(
        model, enc.input_ids, enc.attention_mask, max_new_tokens=10, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, generator=torch.Generator().manual_seed(0), num_samples=G,
    )
    input_ids = torch.cat([enc.input_ids.repeat_interleave(G, 0), out.ids], 1)
    attention_mask = torch.cat([enc.attention_mask.repeat_interleave(G, 0), out.mask.long()], 1)
    T, m = out.ids.shape[1], out.mask
    assert lp._pack_plan(model, input_ids, attention_mask, T) is not None
    assert (out.mask.sum(-1) > 1).any() and len(set(out.mask.sum(-1).tolist())) > 1

    def logprobs_and_grads(fn):
        model.zero_grad()
        logp, entropy = fn(model, input_ids, attention_mask, T, 0.7, True)
        ((logp * m).sum() / m.sum()).backward()
        return logp, entropy, [p.grad.clone() for p in model.parameters()]

    packed = logprobs_and_grads(lp.completion_logprobs)
    padded = logprobs_and_grads(lp._padded_logprobs)
    torch.testing.assert_close(packed[0][m], padded[0][m], atol=1e-5, rtol=0)
    torch.testing.assert_close(packed[1][m], padded[1][m], atol=1e-5, rtol=0)
    for a, b in zip(packed[2], padded[2]):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)
    assert (packed[0][~m] == 0).all()


def test_packing_is_skipped_when_it_does_not_save():
    model, tok = build(ARCHS[0], "sdpa")
    enc = tok(PROMPTS, padding=True, return_tensors="pt", add_special_tokens=False)
    out = sample(model, enc.input_ids, enc.attention_mask, max_new_tokens=6, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, temperature=0.0)
    input_ids = torch.cat([enc.input_ids, out.ids], 1)
    attention_mask = torch.cat([enc.attention_mask, out.mask.long()], 1)
    assert lp._pack_plan(model, input_ids, attention_mask, out.ids.shape[1]) is None  # no shared prompts
