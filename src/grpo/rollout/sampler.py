"""Batched autoregressive sampling with a KV cache, written for rollouts.

Prompts come left-padded `[B, P]`; completions come back right-padded `[B, T]`. The prompt is
encoded once (prefill), then one token per step reuses the cache; rows that have emitted EOS
are dropped from the batch (and from the cache), so the tail of a rollout costs only what is still
running. Randomness comes from an explicit `torch.Generator`, which makes a rollout a pure
function of (weights, prompts, seed): that is what makes resumed runs exact.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Completions:
    ids: Tensor  # [B, T] long, right-padded with pad_token_id
    mask: Tensor  # [B, T] bool, real completion tokens (EOS included)
    truncated: Tensor  # [B] bool, hit max_new_tokens without EOS


def cache_kwarg(model) -> str:
    """Name of the KV-cache argument of `model.forward` (transformers 5 says `cache`, 4 `past_key_values`)."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def position_ids_from_mask(attention_mask: Tensor) -> Tensor:
    """[B, L] positions counting only real tokens, so left padding does not shift positions."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def _next_token(logits: Tensor, temperature: float, top_p: float, generator: torch.Generator | None) -> Tensor:
    """logits [B, V] -> token ids [B]: greedy when temperature == 0, else nucleus sampling."""
    if temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        # keep the smallest prefix whose mass reaches top_p (the top token always stays)
        drop = sorted_probs.cumsum(-1) - sorted_probs >= top_p
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        choice = torch.multinomial(sorted_probs, 1, generator=generator)
        return order.gather(-1, choice).squeeze(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def sample(
    model,
    prompt_ids: Tensor,
    prompt_mask: Tensor,
    *,
    max_new_tokens: int,
    eos_token_id: int,
    pad_token_id: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    num_samples: int = 1,
) -> Completions:
    """Sample up to `max_new_tokens` tokens after each left-padded prompt [B, P]; temperature 0 = greedy.

    With `num_samples = G`, each prompt is encoded once and its cache shared by G samples; the
    result has B * G rows, each prompt's G samples contiguous (the layout of a GRPO group).
    """
    device = prompt_ids.device
    batch = prompt_ids.shape[0] * num_samples
    cache_arg = cache_kwarg(model)
    out_ids = torch.full((batch, max_new_tokens), pad_token_id, dtype=torch.long, device=device)
    lengths = torch.zeros(batch, dtype=torch.long, device=device)
    finished = torch.zeros(batch, dtype=torch.bool, device=device)

    attention_mask = prompt_mask.long()
    positions = position_ids_from_mask(attention_mask)
    out = model(input_ids=prompt_ids, attention_mask=attention_mask, position_ids=positions, use_cache=True, logits_to_keep=1)
    cache = out[cache_arg]
    logits = out.logits[:, -1]  # [B, V]
    next_pos = positions[:, -1:] + 1  # [B, 1]
    if num_samples > 1:  # share the prompt's activations across its group: [B, ...] -> [B*G, ...]
        cache.batch_repeat_interleave(num_samples)
        logits, next_pos, attention_mask = (x.repeat_interleave(num_samples, dim=0) for x in (logits, next_pos, attention_mask))
    alive = torch.arange(batch, device=device)  # rows of the full batch still in the running batch

    for step in range(max_new_tokens):
        token = _next_token(logits, temperature, top_p, generator)  # [b]
        out_ids[alive, step] = token
        lengths[alive] += 1
        done = token == eos_token_id
        finished[alive[done]] = True
        if step == max_new_tokens - 1 or bool(done.all()):
            break
        if bool(done.any()):  # shrink the running batch and its cache to the rows still going
            keep = (~done).nonzero().squeeze(-1)
            alive, token, next_pos, attention_mask = alive[keep], token[keep], next_pos[keep], attention_mask[keep]
            cache.batch_select_indices(keep)
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones(len(alive), 1)], dim=1)
        out = model(input_ids=token[:, None], attention_mask=attention_mask, position_ids=next_pos, use_cache=True, **{cache_arg: cache})
        cache, logits, next_pos = out[cache_arg], out.logits[:, -1], next_pos + 1

    mask = torch.arange(max_new_tokens, device=device)[None, :] < lengths[:, None]
    width = int(lengths.max()) if batch else 0
    return Completions(ids=out_ids[:, :width], mask=mask[:, :width], truncated=~finished)
