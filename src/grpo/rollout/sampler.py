"""Batched autoregressive sampling with a KV cache, written for rollouts.

Prompts come left-padded `[B, P]`; completions come back right-padded `[B, T]`. The prompt is
encoded once (prefill) and, with `num_samples = G`, its cache is shared by the G samples; then one
token per step reuses the cache. What keeps the per-token cost down:

- rows that have emitted EOS are dropped from the batch and from the cache, so the tail of a
  rollout costs only what is still running. They are dropped in batches, once they are a
  quarter of the running rows: dropping copies the whole cache, and doing it at every step where
  some row ends cost more than computing a few finished rows a little longer (measured at G=8);
- the attention mask of every step is one tensor built once and sliced (no mask building per token);
- Llama/Qwen2-shaped models decode through `grpo.rollout.fast_decode` (the same logits bit for
  bit, without transformers' per-call overhead);
- one host sync per token (how many rows are done).

Randomness comes from an explicit `torch.Generator`, which makes a rollout a pure function of
(weights, prompts, seed): that is what makes resumed runs exact.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from torch import Tensor

from grpo.models.capabilities import attention_kernel_mask, full_attention_only, position_ids_from_mask
from grpo.rollout import fast_decode

COMPACT_FRACTION = 1 / 4  # drop finished rows once they are this share of the running batch


@dataclass
class Completions:
    ids: Tensor  # [B, T] long, right-padded with pad_token_id
    mask: Tensor  # [B, T] bool, real completion tokens (EOS included)
    truncated: Tensor  # [B] bool, hit max_new_tokens without EOS
    logp: Tensor | None = None  # [B, T] float32 log-prob of each sampled token under the sampler (`token_logp`); 0 on padding
    # tool use (grpo.rollout.tool_decode.sample_with_tools); all None when sampled without a toolbox
    tool_mask: Tensor | None = None  # [B, T] bool, True on tool-result tokens (context, not the policy's action)
    tool_calls: Tensor | None = None  # [B] long, calls that got a result
    tool_errors: Tensor | None = None  # [B] long, of which the tool reported an error
    tool_seconds: Tensor | None = None  # [B] float, wall-clock seconds in tools

    @property
    def policy_mask(self) -> Tensor:
        """[B, T] bool: the policy's own tokens (EOS included), tool results left out."""
        return self.mask if self.tool_mask is None else self.mask & ~self.tool_mask


def cache_kwarg(model) -> str:
    """Name of the KV-cache argument of `model.forward` (transformers 5 says `cache`, 4 `past_key_values`)."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _next_token(
    logits: Tensor, temperature: float, top_p: float, generator: torch.Generator | None, uniforms: Tensor | None = None
) -> Tensor:
    """logits [B, V] -> token ids [B]: greedy when temperature == 0, else nucleus sampling.

    uniforms: [B] numbers in [0, 1), one per row: the token is drawn by inverse CDF from them
    (each row's draw then depends on its own numbers only, not on the batch); None: torch.multinomial.
    """
    if temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    order = None
    if top_p < 1.0:
        probs, order = probs.sort(dim=-1, descending=True)
        # keep the smallest prefix whose mass reaches top_p (the top token always stays)
        drop = probs.cumsum(-1) - probs >= top_p
        probs = probs.masked_fill(drop, 0.0)
    if uniforms is None:
        choice = torch.multinomial(probs, 1, generator=generator)
    else:
        cdf = probs.cumsum(-1)  # [B, V]
        choice = torch.searchsorted(cdf, (uniforms * cdf[:, -1])[:, None].contiguous(), right=True)
        choice = choice.clamp(max=probs.shape[-1] - 1)
    return (order.gather(-1, choice) if order is not None else choice).squeeze(-1)


def token_logp(logits: Tensor, token: Tensor, temperature: float) -> Tensor:
    """logits [B, V], token [B] -> log-prob of each token [B] (float32) in the trainer's convention
    (grpo.rollout.logprobs._token_logprobs): softmax(logits / temperature), unscaled at temperature 0 or 1,
    top_p NOT applied (the trainer's log-probs have no nucleus either, so a ratio of the two measures only
    the numerical mismatch, never the truncation)."""
    logits = logits.float()
    if temperature not in (0, 1):
        logits = logits / temperature
    return torch.log_softmax(logits, dim=-1).gather(-1, token[:, None]).squeeze(-1)


def row_uniforms(row_seeds: list[int], steps: int, device) -> Tensor:
    """[B, steps] uniform numbers, row b's from a generator seeded with row_seeds[b]."""
    rows = [torch.rand(steps, generator=torch.Generator().manual_seed(int(seed))) for seed in row_seeds]
    return torch.stack(rows).to(device) if rows else torch.zeros(0, steps, device=device)


def generator_on(generator: torch.Generator | None, device: torch.device) -> torch.Generator | None:
    """`generator`, or one on `device` seeded from it (sampling on a GPU needs a GPU generator; callers seed CPU
    ones), so a rollout stays a function of the seed wherever it runs."""
    if generator is None or generator.device.type == device.type:
        return generator
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return torch.Generator(device=device).manual_seed(seed)


def _decode_mask(model, prompt_mask: Tensor, max_new_tokens: int) -> Tensor:
    """The attention mask of every decoding step at once: [B, 1, 1, P + max_new_tokens], as the attention
    implementation takes it (sdpa: bool, eager: additive), or the 2-D [B, P + max_new_tokens] that the
    model turns into its own masks (other attention kernels, sliding-window layers)."""
    ones = prompt_mask.new_ones(prompt_mask.shape[0], max_new_tokens)
    mask = torch.cat([prompt_mask, ones], dim=1)  # [B, P + max_new_tokens]
    config = getattr(model, "config", None)
    attn = getattr(config, "_attn_implementation", None) if full_attention_only(config) else None
    if attn in ("sdpa", "eager"):
        return attention_kernel_mask(model, mask.bool()[:, None, None, :])
    return mask.long()


def prefill(model, prompt_ids: Tensor, prompt_mask: Tensor, width: int, num_samples: int, cache_arg: str):
    """Encode the left-padded prompts [B, P] once and share each one's activations across its `num_samples` rows:
    (FastDecoder or None, the transformers cache, logits [B*G, V] of the first token, its position [B*G, 1], the
    attention mask of every decoding step [B*G, ..., P + width], sliced per step)."""
    positions = position_ids_from_mask(prompt_mask)
    out = model(input_ids=prompt_ids, attention_mask=prompt_mask.long(), position_ids=positions, use_cache=True, logits_to_keep=1)
    cache = out[cache_arg]
    logits = out.logits[:, -1]  # [B, V]
    next_pos = positions[:, -1:] + 1  # [B, 1]
    full_mask = _decode_mask(model, prompt_mask, width)  # [B, ..., P + width]
    decoder = fast_decode.FastDecoder(model, cache, prompt_ids.shape[1] + width, num_samples) if fast_decode.supports(model) else None
    if num_samples > 1:  # [B, ...] -> [B*G, ...]
        if decoder is None:
            cache.batch_repeat_interleave(num_samples)
        logits, next_pos, full_mask = (x.repeat_interleave(num_samples, dim=0) for x in (logits, next_pos, full_mask))
    return decoder, cache, logits, next_pos, full_mask


def keep_rows(decoder, cache, keep: Tensor) -> None:
    """Keep only the running rows `keep` in the decode state: the FastDecoder's K/V, or transformers' cache."""
    if decoder is not None:
        decoder.select(keep)
    else:
        cache.batch_select_indices(keep)


def decode_step(model, decoder, cache, cache_arg: str, token: Tensor, position: Tensor, attention_mask: Tensor):
    """One token [b] per running row through the cache: (cache, logits [b, V]); the FastDecoder when there is one,
    else the model's forward with its cache."""
    if decoder is not None:
        return cache, decoder.step(token, position, attention_mask)
    out = model(input_ids=token[:, None], attention_mask=attention_mask, position_ids=position, use_cache=True, **{cache_arg: cache})
    return out[cache_arg], out.logits[:, -1]


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
    row_seeds: list[int] | None = None,
) -> Completions:
    """Sample up to `max_new_tokens` tokens after each left-padded prompt [B, P]; temperature 0 = greedy.

    With `num_samples = G`, each prompt is encoded once and its cache shared by G samples; the
    result has B * G rows, each prompt's G samples contiguous (the layout of a GRPO group).
    Randomness: `generator` for the whole batch, or `row_seeds` (B * G seeds): each output row's draws
    then come from its own seed, so a row's sample does not depend on which batch it was decoded in.
    """
    device = prompt_ids.device
    generator = generator_on(generator, device)
    batch, P = prompt_ids.shape[0] * num_samples, prompt_ids.shape[1]
    if row_seeds is not None and len(row_seeds) != batch:
        raise ValueError(f"row_seeds: need one seed per output row ({batch}), got {len(row_seeds)}")
    uniforms = row_uniforms(row_seeds, max_new_tokens, device) if row_seeds is not None and temperature > 0 else None
    cache_arg = cache_kwarg(model)
    out_ids = torch.full((batch, max_new_tokens), pad_token_id, dtype=torch.long, device=device)
    out_logp = torch.zeros(batch, max_new_tokens, dtype=torch.float32, device=device)  # the sampler's log-probs
    lengths = torch.zeros(batch, dtype=torch.long, device=device)
    finished = torch.zeros(batch, dtype=torch.bool, device=device)

    decoder, cache, logits, next_pos, full_mask = prefill(model, prompt_ids, prompt_mask, max_new_tokens, num_samples, cache_arg)
    alive = torch.arange(batch, device=device)  # rows of the full batch in the running batch
    stopped = torch.zeros(batch, dtype=torch.bool, device=device)  # running rows that emitted EOS (not yet dropped)

    for step in range(max_new_tokens):
        token = _next_token(logits, temperature, top_p, generator, None if uniforms is None else uniforms[alive, step])  # [b]
        out_ids[alive, step] = token.masked_fill(stopped, pad_token_id)
        out_logp[alive, step] = token_logp(logits, token, temperature).masked_fill(stopped, 0.0)
        lengths[alive] += (~stopped).long()
        done = (token == eos_token_id) & ~stopped
        finished[alive] |= done
        stopped |= done
        n_stopped = int(stopped.sum())  # the one host sync per token
        if step == max_new_tokens - 1 or n_stopped == len(alive):
            break
        if n_stopped and n_stopped >= COMPACT_FRACTION * len(alive):  # drop finished rows from the batch and cache
            keep = (~stopped).nonzero().squeeze(-1)
            alive, token, next_pos, full_mask, stopped = alive[keep], token[keep], next_pos[keep], full_mask[keep], stopped[keep]
            keep_rows(decoder, cache, keep)
        attention_mask = full_mask[..., : P + step + 1]  # the prompt's padding, then the tokens so far
        cache, logits = decode_step(model, decoder, cache, cache_arg, token, next_pos, attention_mask)
        next_pos = next_pos + 1

    mask = torch.arange(max_new_tokens, device=device)[None, :] < lengths[:, None]
    width = int(lengths.max()) if batch else 0
    return Completions(ids=out_ids[:, :width], mask=mask[:, :width], truncated=~finished, logp=out_logp[:, :width])
