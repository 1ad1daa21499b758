"""Sampling with tools: a row stops when its text closes a call, the tool runs, the result's tokens are appended,
and the row resumes from its KV cache while the other rows go on sampling.

The loop is `grpo.rollout.sampler.sample`'s, one token per row per step through the same cache (FastDecoder
for Llama/Qwen2 shapes, model.forward + DynamicCache otherwise), with one difference: a row that has result
tokens queued is fed the next of them instead of a sampled token. So the result is encoded through the
cache exactly as if it had been generated (nothing before it is encoded again), and the logits that follow
its last token are those of the whole transcript so far: resuming equals sampling from the re-encoded text.

- Only the policy's tokens count against `max_new_tokens` and draw randomness: with `row_seeds`, a row's
  k-th policy token uses its k-th uniform, whatever tool text came before it. The output is up to
  max_new_tokens + max_calls * max_result_tokens wide.
- A row is decoded (to ask the toolbox whether a call closed) only after a token that could end the
  format's `close` text (`Toolbox.closing_token_ids`).
- A call closed by the row's last allowed policy token gets no result: the row ends there (truncated).
- `Completions.tool_mask` marks the result tokens (context, not the policy's action: they stay out of the
  loss); tool_calls / tool_errors / tool_seconds are per row.
"""

from __future__ import annotations

import torch

from grpo.rollout.sampler import (COMPACT_FRACTION, Completions, _next_token, cache_kwarg, decode_step, generator_on, keep_rows,
                                  prefill, row_uniforms, token_logp)


def closing_table(toolbox, vocab_size: int, device) -> torch.Tensor:
    """[V] bool: True for the tokens after which a row is decoded and the toolbox asked."""
    ids = toolbox.closing_token_ids()
    table = torch.zeros(max(vocab_size, max(ids, default=-1) + 1), dtype=torch.bool)
    table[ids] = True
    return table.to(device)


@torch.no_grad()
def sample_with_tools(
    model, prompt_ids, prompt_mask, toolbox, *, max_new_tokens: int, eos_token_id: int, pad_token_id: int,
    temperature: float = 1.0, top_p: float = 1.0, generator: torch.Generator | None = None, num_samples: int = 1,
    row_seeds: list[int] | None = None,
) -> Completions:
    """`grpo.rollout.sampler.sample` (same arguments, same layout of the B * num_samples rows) with a bound
    `grpo.tools.toolbox.Toolbox`: calls get their results appended and the rows resume."""
    device = prompt_ids.device
    generator = generator_on(generator, device)
    batch, P = prompt_ids.shape[0] * num_samples, prompt_ids.shape[1]
    if row_seeds is not None and len(row_seeds) != batch:
        raise ValueError(f"row_seeds: need one seed per output row ({batch}), got {len(row_seeds)}")
    width = max_new_tokens + toolbox.max_calls * toolbox.max_result_tokens  # every policy token and result at its longest
    uniforms = row_uniforms(row_seeds, max_new_tokens, device) if row_seeds is not None and temperature > 0 else None
    cache_arg = cache_kwarg(model)
    out_ids = torch.full((batch, width), pad_token_id, dtype=torch.long, device=device)
    tool_mask = torch.zeros(batch, width, dtype=torch.bool, device=device)
    out_logp = torch.zeros(batch, width, dtype=torch.float32, device=device)  # the sampler's log-probs; 0 on tool tokens
    lengths = torch.zeros(batch, dtype=torch.long, device=device)
    policy_tokens = torch.zeros(batch, dtype=torch.long, device=device)  # [B] the policy's tokens so far
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    calls, errors, seconds = [0] * batch, [0] * batch, [0.0] * batch
    queued: dict[int, list[int]] = {}  # row of the full batch -> result tokens still to feed it

    decoder, cache, logits, next_pos, full_mask = prefill(model, prompt_ids, prompt_mask, width, num_samples, cache_arg)
    closing = closing_table(toolbox, logits.shape[-1], device)  # [V]
    alive = torch.arange(batch, device=device)  # rows of the full batch in the running batch
    alive_rows = list(range(batch))  # the same, on the host
    stopped = torch.zeros(batch, dtype=torch.bool, device=device)  # running rows that ended (not yet dropped)

    for step in range(width):
        u = None if uniforms is None else uniforms[alive, policy_tokens[alive].clamp(max=max_new_tokens - 1)]
        token = _next_token(logits, temperature, top_p, generator, u)  # [b]
        forced = torch.zeros_like(stopped)  # [b] rows fed a result token this step
        if queued:
            at = [i for i, row in enumerate(alive_rows) if row in queued]
            forced[at] = True
            token[at] = torch.tensor([_pop(queued, alive_rows[i]) for i in at], dtype=token.dtype, device=device)
        out_ids[alive, step] = token.masked_fill(stopped, pad_token_id)
        tool_mask[alive, step] = forced
        out_logp[alive, step] = token_logp(logits, token, temperature).masked_fill(forced | stopped, 0.0)
        lengths[alive] += (~stopped).long()
        policy = ~forced & ~stopped
        policy_tokens[alive] += policy.long()
        done = policy & (token == eos_token_id)
        finished[alive] |= done
        spent = policy & (policy_tokens[alive] >= max_new_tokens)  # the policy's budget is used up: the row ends
        ask = policy & ~done & ~spent & closing[token]
        stopped |= done | spent
        n_stopped, *asking = torch.cat([stopped.sum().view(1), ask.nonzero().view(-1)]).tolist()  # one host sync
        for i in asking:
            row = alive_rows[i]
            _call(toolbox, out_ids[row, : step + 1].tolist(), row, calls, errors, seconds, queued)
        if step == width - 1 or n_stopped == len(alive_rows):
            break
        if n_stopped and n_stopped >= COMPACT_FRACTION * len(alive_rows):  # drop ended rows from the batch and cache
            keep = (~stopped).nonzero().squeeze(-1)
            alive_rows = [alive_rows[i] for i in keep.tolist()]
            alive, token, next_pos, full_mask, stopped = alive[keep], token[keep], next_pos[keep], full_mask[keep], stopped[keep]
            keep_rows(decoder, cache, keep)
        attention_mask = full_mask[..., : P + step + 1]  # the prompt's padding, then the tokens so far
        cache, logits = decode_step(model, decoder, cache, cache_arg, token, next_pos, attention_mask)
        next_pos = next_pos + 1

    mask = torch.arange(width, device=device)[None, :] < lengths[:, None]
    used = int(lengths.max()) if batch else 0
    return Completions(
        ids=out_ids[:, :used], mask=mask[:, :used], truncated=~finished, tool_mask=tool_mask[:, :used], logp=out_logp[:, :used],
        tool_calls=torch.tensor(calls, dtype=torch.long), tool_errors=torch.tensor(errors, dtype=torch.long),
        tool_seconds=torch.tensor(seconds, dtype=torch.float64),
    )


def _call(toolbox, ids: list[int], row: int, calls, errors, seconds, queued) -> None:
    """Ask the toolbox about row `row`'s text (its completion so far, `ids`); queue the result's tokens if a call closed."""
    text = toolbox.tokenizer.decode(ids, skip_special_tokens=True)  # as the verifier and the format see transcripts
    result = toolbox.respond(text, calls[row])
    if result is None:
        return
    calls[row] += 1
    errors[row] += int(result.error)
    seconds[row] += result.seconds
    result_ids = toolbox.result_ids(result)
    if result_ids:
        queued[row] = result_ids


def _pop(queued: dict[int, list[int]], row: int) -> int:
    """The next result token of `row` (the row leaves `queued` with its last one)."""
    tokens = queued[row]
    token = tokens.pop(0)
    if not tokens:
        del queued[row]
    return token


RESULT_MARKS = ("⟦", "⟧")  # around tool results in the samples panel


def marked_texts(tokenizer, out: Completions) -> list[str]:
    """Each completion's transcript with its tool results wrapped in RESULT_MARKS (the samples panel), decoded run by
    run (policy text, result, policy text, ...; special tokens skipped); plain decoded texts when sampled without tools."""
    ids, mask = out.ids.cpu(), out.mask.cpu()
    if out.tool_mask is None:
        return tokenizer.batch_decode(ids, skip_special_tokens=True)
    tool = out.tool_mask.cpu()
    texts = []
    for r in range(ids.shape[0]):
        row, row_tool = ids[r, mask[r]].tolist(), tool[r, mask[r]].tolist()
        runs, start = [], 0
        for t in range(1, len(row) + 1):
            if t == len(row) or row_tool[t] != row_tool[start]:
                runs.append((row[start:t], row_tool[start]))
                start = t
        parts = tokenizer.batch_decode([part for part, _ in runs], skip_special_tokens=True) if runs else []
        texts.append("".join(f"{RESULT_MARKS[0]}{p}{RESULT_MARKS[1]}" if is_tool else p for p, (_, is_tool) in zip(parts, runs)))
    return texts


def tool_stats(outs: list[Completions]) -> tuple[dict[str, float], dict[str, float]]:
    """(rollout/tool/* statistics, perf/* timings) over every completion of `outs`; ({}, {}) when sampled without tools:
    tool/calls_per_completion, tool/call_rate (share of completions with a call), tool/errors (per completion), and
    tool_time_s (seconds in tools, summed over the completions)."""
    if outs[0].tool_calls is None:
        return {}, {}
    calls = torch.cat([o.tool_calls for o in outs]).double()
    errors = torch.cat([o.tool_errors for o in outs]).double()
    seconds = torch.cat([o.tool_seconds for o in outs]).double()
    stats = {"tool/calls_per_completion": calls.mean().item(), "tool/call_rate": (calls > 0).double().mean().item(),
             "tool/errors": errors.mean().item()}
    return stats, {"tool_time_s": seconds.sum().item()}
