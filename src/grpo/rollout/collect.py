"""Collect one rollout: sample G outputs per question from pi_old, score them, compute advantages,
and record the old and reference log-probs once (Algorithm 1, the inner loop's first five lines)."""

from __future__ import annotations

import time
from contextlib import contextmanager

import torch
from torch import Tensor

from grpo.algo.advantages import outcome_advantages, process_advantages
from grpo.rollout.batch import RolloutBatch
from grpo.rollout.logprobs import completion_logprobs
from grpo.rollout.sampler import Completions, sample


@contextmanager
def evaluating(*models):
    """Models in eval mode (no dropout) for sampling and scoring, restored afterwards."""
    was = [m.training for m in models]
    for m in models:
        m.eval()
    try:
        yield
    finally:
        for m, w in zip(models, was):
            m.train(w)


@torch.no_grad()
def sample_problems(policy, tokenizer, problems, *, num_samples: int = 1, **sampling) -> tuple[Tensor, Tensor, Completions]:
    """Sample `num_samples` completions of each problem's prompt from `policy` (in eval mode).

    Returns the prompts as encoded, left-padded on the policy's device (prompt_ids, prompt_mask:
    [B, P]), and the Completions ([B * num_samples, T], each prompt's samples contiguous).
    `sampling`: max_new_tokens, temperature, top_p, generator (see `grpo.rollout.sampler.sample`).
    """
    device = next(policy.parameters()).device
    enc = tokenizer([p.prompt for p in problems], padding=True, return_tensors="pt", add_special_tokens=False)
    prompt_ids, prompt_mask = enc.input_ids.to(device), enc.attention_mask.to(device)
    with evaluating(policy):
        out = sample(
            policy,
            prompt_ids,
            prompt_mask,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            num_samples=num_samples,
            **sampling,
        )
    return prompt_ids, prompt_mask, out


@torch.no_grad()
def batched_logprobs(model, input_ids, attention_mask, T, temperature, chunk: int) -> Tensor:
    """completion_logprobs over row chunks of at most `chunk` rows (bounds peak memory)."""
    parts = [
        completion_logprobs(model, input_ids[i : i + chunk], attention_mask[i : i + chunk], T, temperature)[0]
        for i in range(0, input_ids.shape[0], chunk)
    ]
    return torch.cat(parts)


def token_ends(tokenizer, ids: list[int]) -> list[int]:
    """For each token of a completion, the length of the decoded text up to and including it."""
    prefixes = tokenizer.batch_decode([ids[: k + 1] for k in range(len(ids))], skip_special_tokens=True)
    return [len(p) for p in prefixes]


def step_reward_tensors(tokenizer, completion_ids: Tensor, completion_mask: Tensor, steps) -> tuple[Tensor, Tensor]:
    """Place each step's reward on the token that ends it: step_rewards [N, T] float, step_end_mask [N, T] bool."""
    N, T = completion_ids.shape
    step_rewards = torch.zeros(N, T)
    step_end_mask = torch.zeros(N, T, dtype=torch.bool)
    for i, row_steps in enumerate(steps):
        if not row_steps:
            continue
        ids = completion_ids[i, completion_mask[i]].tolist()
        ends = token_ends(tokenizer, ids)
        for char_idx, reward in row_steps:
            t = next((k for k, end in enumerate(ends) if end > char_idx), None)
            if t is not None:
                step_rewards[i, t] = reward
                step_end_mask[i, t] = True
    return step_rewards, step_end_mask


@torch.no_grad()
def collect_rollout(
    policy,
    reference,
    tokenizer,
    problems,
    reward_source,
    task,
    *,
    group_size: int,
    supervision: str = "outcome",
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    need_old_logp: bool = False,
    scale_rewards: bool = True,
    adv_eps: float = 1e-4,
    skip_zero_spread: bool = True,
    logprob_chunk: int = 256,
):
    """Returns (RolloutBatch, stats: dict of floats, samples: list of (Problem, completion text, reward)) ."""
    device = next(policy.parameters()).device
    t0 = time.perf_counter()
    prompt_ids, prompt_mask, out = sample_problems(
        policy, tokenizer, problems, num_samples=group_size,
        max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, generator=generator,
    )
    t_gen = time.perf_counter() - t0

    # ---- score
    t1 = time.perf_counter()
    group_problems = [p for p in problems for _ in range(group_size)]
    texts = tokenizer.batch_decode(out.ids.cpu(), skip_special_tokens=True)
    correct = torch.tensor([float(task.verify(p, c)) for p, c in zip(group_problems, texts)])
    if supervision == "outcome":
        rewards = reward_source.outcome(group_problems, texts)  # [N]
        advantages = outcome_advantages(rewards, group_size, scale=scale_rewards, eps=adv_eps)  # [N]
        row_has_signal = advantages != 0
    elif supervision == "process":
        steps = reward_source.steps(group_problems, texts)
        step_rewards, step_end_mask = step_reward_tensors(tokenizer, out.ids.cpu(), out.mask.cpu(), steps)
        advantages = process_advantages(step_rewards, step_end_mask, group_size, eps=adv_eps)  # [N, T]
        rewards = torch.stack([(step_rewards[i][step_end_mask[i]].mean() if step_end_mask[i].any() else torch.tensor(0.0)) for i in range(len(texts))])
        row_has_signal = (advantages != 0).any(-1)
    else:
        raise ValueError(f"supervision={supervision!r} is not known; choose outcome or process")
    group_has_signal = row_has_signal.view(-1, group_size).any(-1)  # [prompts]
    keep = group_has_signal.repeat_interleave(group_size) if skip_zero_spread else torch.ones_like(row_has_signal)
    t_score = time.perf_counter() - t1

    # ---- old and reference log-probs, once per rollout
    t2 = time.perf_counter()
    input_ids = torch.cat([prompt_ids.repeat_interleave(group_size, 0), out.ids], dim=1)
    attention_mask = torch.cat([prompt_mask.repeat_interleave(group_size, 0), out.mask.long()], dim=1)
    T = out.ids.shape[1]
    old_logp = ref_logp = None
    if need_old_logp:
        with evaluating(policy):
            old_logp = batched_logprobs(policy, input_ids, attention_mask, T, temperature, logprob_chunk)
    if reference is not None:
        ref_logp = batched_logprobs(reference, input_ids, attention_mask, T, temperature, logprob_chunk)
    t_logp = time.perf_counter() - t2

    batch = RolloutBatch(
        input_ids=input_ids,
        attention_mask=attention_mask,
        completion_mask=out.mask & keep.to(device)[:, None],
        advantages=advantages.to(device),
        old_logp=old_logp,
        ref_logp=ref_logp,
    )
    n_tokens = int(out.mask.sum())
    lengths = out.mask.sum(-1).float()
    stats = {
        "reward_mean": rewards.mean().item(),
        "reward_std": rewards.std().item() if len(rewards) > 1 else 0.0,
        "accuracy": correct.mean().item(),
        "adv_std": advantages[advantages != 0].std().item() if int((advantages != 0).sum()) > 1 else 0.0,
        "adv_abs_mean": advantages.abs().mean().item(),
        "completion_len": lengths.mean().item(),
        "truncated_frac": out.truncated.float().mean().item(),
        "zero_spread_frac": 1.0 - group_has_signal.float().mean().item(),
        "rollout_tokens_per_s": n_tokens / max(t_gen, 1e-9),
        "gen_time_s": t_gen,
        "score_time_s": t_score,
        "logp_time_s": t_logp,
    }
    samples = list(zip(group_problems, texts, rewards.tolist()))
    return batch, stats, samples
