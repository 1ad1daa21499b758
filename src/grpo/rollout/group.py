"""One exploration stage of GRPO (Algorithm 1, the inner loop's first five lines), owned by one object:

    engine        -> G completions per question, from pi_old (the current policy)
    reward source -> rewards (one per completion, or one per reasoning step), checked
    estimator     -> group-relative advantages
    pi_old, pi_ref -> log-probs of the sampled tokens, once per rollout

`GroupRollout` is built from the config (`rollout:` in conf/train.yaml, with the `sampling` group's
engine and the `supervision` group's advantage estimator), given the bound reward source, and owned
by `GRPOModule`, which calls it once per GRPO step.

Length control (`mask_truncated`) changes only which tokens enter the loss. Dynamic sampling (DAPO,
arXiv 2503.14476, Sec 3.2; a `refill` from the data module) draws further generation batches while too
few groups have reward spread and keeps a fixed number of groups (`select_groups`, `merge_groups`);
advantages are computed per generation batch as it is drawn (scale_rewards=batch: over that batch).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from grpo.algo.rollout_correction import NoCorrection, mismatch_stats
from grpo.models.adapters import reference_model
from grpo.rewards.combine import Scores, WeightedRewards
from grpo.rollout.batch import RolloutBatch
from grpo.rollout.dynamic_sampling import Draw, merge_groups, select_groups
from grpo.rollout.engine import RolloutEngine, sample_problems
from grpo.rollout.gauge import gauged_name, rollout_gauge
from grpo.rollout.logprobs import completion_logprobs
from grpo.rollout.modes import evaluating
from grpo.rollout.steps import step_reward_tensors
from grpo.rollout.tool_decode import marked_texts, tool_stats
from grpo.tasks.base import verified

INVALID_REWARD = ("error", "zero")
OLD_LOGP_FROM = ("trainer", "sampler")  # grpo.old_logp_from: where log pi_old comes from


@dataclass
class Rollout:
    batch: RolloutBatch  # N = questions x G rows, each question's group contiguous
    stats: dict[str, float]  # rollout/* statistics (means over this rank's rows)
    timings: dict[str, float]  # perf/*: seconds in generation, scoring, log-probs; rollout tokens/s
    samples: list = field(default_factory=list)  # (Problem, completion text, reward) per row
    components: dict = field(default_factory=dict)  # per reward component: [N] its value, None where it abstained
    ended: list = field(default_factory=list)  # [N] per sample: True if the policy wrote EOS, False if cut by max_new_tokens
    shown: list = field(default_factory=list)  # [N] completion texts as the samples panel shows them (tool results marked)
    correct: Tensor | None = None  # [rows drawn] 0/1 the task's verifier, in the samples' order (the first draw's rows first)


@torch.no_grad()
def batched_logprobs(model, input_ids, attention_mask, T, temperature, chunk: int) -> Tensor:
    """completion_logprobs over row chunks of at most `chunk` rows (bounds peak memory): [N, T]."""
    parts = [
        completion_logprobs(model, input_ids[i : i + chunk], attention_mask[i : i + chunk], T, temperature)[0]
        for i in range(0, input_ids.shape[0], chunk)
    ]
    return torch.cat(parts)


class GroupRollout:
    """engine: a `RolloutEngine` (its temperature is the one log-probs use); advantages: an advantage
    estimator (grpo.algo.advantages); reward: a bound reward component (grpo.rewards.base), e.g. a
    WeightedRewards (grpo.rewards.combine) of several.

    skip_zero_spread: leave rows of groups whose advantages are all 0 out of the update (their
        completion_mask is all False), so they dilute nothing; only when the loss has no KL term
        (`reference` None, beta = 0). With beta > 0 they stay: their -beta*KL term is part of the
        objective (advantage 0, so it is all they add). Under dynamic sampling the same holds for
        the flat groups that fill the update.
    mask_truncated: leave completions that hit max_new_tokens without EOS out of the loss (their
        completion_mask is all False; TRL's mask_truncated_completions). They still count in their
        group's reward mean and std, so the other completions' advantages are as without it.
    invalid_reward: "error" stops the run at a NaN/inf/non-numeric reward; "zero" counts it as 0.
    eos_credit: process supervision: in a row that stopped with EOS, the tokens after the final step's last
        character, the EOS included, carry the final step's reward (`step_reward_tensors`), so stopping gets the
        final step's advantage. False: every step's reward stays on its last character's token and the EOS
        token's advantage is 0 (stopping is never trained; the issue's "endings are invisible").
    logprob_chunk: rows per forward pass when computing old/reference log-probs.
    correction: the sampler-trainer mismatch correction (grpo.algo.rollout_correction; rollout_correction=none |
        tis | mis). tis / mis need the trainer's log pi_old, so it is computed even for a single update.
    old_logp_from: "trainer" (log pi_old recomputed by the policy, when the step has more than one update or a
        correction needs it) or "sampler" (the engine's log-probs are log pi_old in every update, also the
        single one of mu = 1: no old-policy forward pass, and the clipped ratio is pi_theta / pi_sampler,
        verl's bypass mode). The mismatch (rollout/mismatch/*) is logged every step the engine gives log-probs:
        here when the trainer's log pi_old is computed, else at the step's first update (GRPOModule.training_step,
        before any optimizer step: over that update's rows).
    """

    def __init__(self, engine: RolloutEngine, advantages, *, group_size: int, reward=None, task=None, tokenizer=None,
                 skip_zero_spread: bool = True, mask_truncated: bool = False, invalid_reward: str = "error",
                 eos_credit: bool = True, logprob_chunk: int = 256, correction=None, old_logp_from: str = "trainer"):
        if invalid_reward not in INVALID_REWARD:
            raise ValueError(f"rollout.invalid_reward={invalid_reward!r}: choose one of {INVALID_REWARD}")
        self.correction = NoCorrection() if correction is None else correction
        if old_logp_from not in OLD_LOGP_FROM:
            raise ValueError(f"grpo.old_logp_from={old_logp_from!r}: choose one of {OLD_LOGP_FROM}")
        if old_logp_from == "sampler" and self.correction.needs_old_logp:
            raise ValueError("grpo.old_logp_from=sampler makes the sampler's log-probs pi_old: the clipped ratio "
                             "pi_theta / pi_sampler is then the correction (verl's bypass mode) and there is no trainer "
                             "pi_old to weigh against; use rollout_correction=none, or grpo.old_logp_from=trainer")
        self.old_logp_from = old_logp_from
        if not eos_credit and not getattr(advantages, "needs_step_rewards", False):
            raise ValueError(f"grpo.eos_credit=false moves process rewards off the EOS token, but {type(advantages).__name__} "
                             "gives every token of a row the row's advantage (EOS included); use it with supervision=process, "
                             "process_min or process_progress, or leave grpo.eos_credit=true")
        if hasattr(advantages, "check_outcome") and reward is not None:  # an estimator that takes an outcome apart (decoupled)
            kinds = {hasattr(c.fn, "steps") for c in WeightedRewards.of(reward).components.values()}
            advantages.check_outcome(kinds == {True, False})  # both step and outcome components
        self.engine, self.advantages, self.group_size = engine, advantages, group_size
        self.reward, self.task, self.tokenizer = reward, task, tokenizer
        self.skip_zero_spread, self.invalid_reward, self.logprob_chunk = skip_zero_spread, invalid_reward, logprob_chunk
        self.mask_truncated, self.eos_credit = mask_truncated, eos_credit

    @property
    def temperature(self) -> float:
        return self.engine.temperature

    @torch.no_grad()
    def __call__(self, policy, reference, problems, generator: torch.Generator | None = None,
                 need_old_logp: bool = False, refill=None) -> Rollout:
        """The rollout of `problems` from `policy` (pi_old); `reference` None when the loss has no KL term.

        refill: None, or dynamic sampling's question supply (grpo.data.rollout_datamodule.Refill): further
            generation batches are drawn, in order, while fewer than `refill.groups` groups have reward
            spread (at most len(refill.batches) of them); see `select_groups` for what the update holds.
        """
        G = self.group_size
        skip = self.skip_zero_spread and reference is None  # with a KL term a flat group's gradient is -beta*KL, not 0
        self.engine.load_weights(policy)
        device = next(policy.parameters()).device
        draws = [self._draw(problems, device, generator)]
        if refill is not None:
            while sum(int(d.group_has_signal.sum()) for d in draws) < refill.groups and len(draws) <= len(refill.batches):
                draws.append(self._draw(refill.batches[len(draws) - 1], device, generator))
            prompt_ids, prompt_mask, out, advantages, keep_groups = merge_groups(
                draws, select_groups([d.group_has_signal for d in draws], refill.groups), G, self.tokenizer.pad_token_id
            )
            keep = (keep_groups if skip else torch.ones_like(keep_groups)).repeat_interleave(G)  # fillers: as flat groups
        else:
            (d,) = draws
            prompt_ids, prompt_mask, out, advantages = d.prompt_ids, d.prompt_mask, d.out, d.advantages
            keep = d.group_has_signal.repeat_interleave(G) if skip else torch.ones(len(d.rewards), dtype=torch.bool)
        t_gen, t_score = sum(d.t_gen for d in draws), sum(d.t_score for d in draws)

        t2 = time.perf_counter()
        input_ids = torch.cat([prompt_ids.repeat_interleave(G, 0), out.ids], dim=1)  # [N, P+T]
        attention_mask = torch.cat([prompt_mask.repeat_interleave(G, 0), out.mask.long()], dim=1)
        T = out.ids.shape[1]
        old_logp = ref_logp = None
        sampler_logp = out.logp  # [N, T] or None (an engine that gives no log-probs)
        if sampler_logp is None and (self.old_logp_from == "sampler" or self.correction.needs_old_logp):
            raise ValueError(f"the rollout engine ({type(self.engine).__name__}) returns no log-probs (Completions.logp): "
                             "grpo.old_logp_from=sampler and rollout_correction=tis|mis need them")
        if self.old_logp_from == "sampler":
            old_logp = sampler_logp
        elif need_old_logp or self.correction.needs_old_logp:
            with evaluating(policy):
                old_logp = batched_logprobs(policy, input_ids, attention_mask, T, self.temperature, self.logprob_chunk)
        if reference is not None:
            with reference_model(reference) as ref, evaluating(ref):  # a frozen copy, or the LoRA policy with its adapters off
                ref_logp = batched_logprobs(ref, input_ids, attention_mask, T, self.temperature, self.logprob_chunk)
        t_logp = time.perf_counter() - t2

        device = input_ids.device
        in_loss = keep & ~out.truncated.cpu() if self.mask_truncated else keep  # [N] rows whose tokens enter the loss
        # tool results left out of the loss (context, not action); the attention mask keeps them: the policy reads them
        completion_mask, update_advantages, mismatch = out.policy_mask & in_loss.to(device)[:, None], advantages.to(device), {}
        if sampler_logp is not None and old_logp is not None and self.old_logp_from == "trainer":
            mismatch = mismatch_stats(old_logp, sampler_logp, out.policy_mask)  # every policy token, in the loss or not
            update_advantages, completion_mask, corrected = self.correction(update_advantages, completion_mask, old_logp, sampler_logp)
            mismatch |= corrected
        batch = RolloutBatch(
            input_ids=input_ids,
            attention_mask=attention_mask,  # tool results included: the policy sees them as context
            completion_mask=completion_mask,
            advantages=update_advantages,
            old_logp=old_logp,
            ref_logp=ref_logp,
            sampler_logp=sampler_logp,
            policy_mask=out.policy_mask,  # the policy's tokens (without tools: every completion token)
        )
        # the policy's behaviour over every completion drawn; the update's advantages over the rows it holds
        rewards = torch.cat([d.rewards for d in draws])
        correct = torch.cat([d.correct for d in draws])
        lengths = torch.cat([d.out.policy_mask.sum(-1).float().cpu() for d in draws])  # the policy's tokens
        truncated = torch.cat([d.out.truncated.float().cpu() for d in draws])
        group_has_signal = torch.cat([d.group_has_signal for d in draws])
        n_tokens = sum(int(d.out.mask.sum()) for d in draws)  # every token decoded, tool results included
        nonzero = advantages[advantages != 0]
        stats = {
            "reward_mean": rewards.mean().item(),
            "reward_std": rewards.std().item() if len(rewards) > 1 else 0.0,
            "accuracy": correct.mean().item(),
            "adv_std": nonzero.std().item() if nonzero.numel() > 1 else 0.0,
            "adv_abs_mean": advantages.abs().mean().item(),
            "completion_len": lengths.mean().item(),
            "truncated_frac": truncated.mean().item(),
            "zero_spread_frac": 1.0 - group_has_signal.float().mean().item(),
            "groups_updated": float(int(keep.view(-1, G)[:, 0].sum())),  # groups whose rows enter the loss
        }
        stats |= {f"mismatch/{name}": value for name, value in mismatch.items()}  # rollout/mismatch/*
        if refill is not None:
            stats["gen_batches"] = float(len(draws))  # generation batches drawn this step (1 + extra)
            stats["groups_kept"] = float(int(keep_groups.sum()))  # informative groups the update holds (at most refill.groups)
        scores = Scores(components={name: [v for d in draws for v in d.scores.components[name]] for name in draws[0].scores.components},
                        invalid=sum(d.scores.invalid for d in draws))  # every completion drawn, in the samples' order
        stats |= {f"reward/{name}": mean for name, mean in scores.means().items()}  # rollout/reward/<component>
        reward = WeightedRewards.of(self.reward)  # the over-optimisation gauge: rollout/gauge/*, answer_rate, steps_per_completion
        stats |= rollout_gauge(self.task, [t for d in draws for t in d.texts], correct, [d.scores for d in draws],
                               gauged_name(reward), self.advantages.needs_step_rewards)
        if self.invalid_reward == "zero":
            stats["invalid_rewards"] = float(scores.invalid)
        timings = {"rollout_tokens_per_s": n_tokens / max(t_gen, 1e-9), "gen_time_s": t_gen, "score_time_s": t_score, "logp_time_s": t_logp}
        tools, tool_timings = tool_stats([d.out for d in draws])  # rollout/tool/*, perf/tool_time_s (only with tools)
        stats |= tools
        timings |= tool_timings
        samples = [(p, text, r) for d in draws for p, text, r in zip(d.problems, d.texts, d.rewards.tolist())]
        ended = [not t for d in draws for t in d.out.truncated.tolist()]  # in the samples' order
        shown = [t for d in draws for t in (marked_texts(self.tokenizer, d.out) if d.out.tool_mask is not None else d.texts)]
        return Rollout(batch, stats, timings, samples, scores.components, ended, shown, correct=correct)

    def _draw(self, problems, device, generator) -> Draw:
        """One generation batch: G completions of each of `problems`, scored, with their advantages."""
        G = self.group_size
        t0 = time.perf_counter()
        prompt_ids, prompt_mask, out = sample_problems(
            self.engine, self.tokenizer, problems, device=device, num_samples=G, generator=generator
        )
        t_gen = time.perf_counter() - t0

        t1 = time.perf_counter()
        group_problems = [p for p in problems for _ in range(G)]
        texts = self.tokenizer.batch_decode(out.ids.cpu(), skip_special_tokens=True)
        correct = torch.tensor([float(verified(self.task, p, c)) for p, c in zip(group_problems, texts)])
        rewards, step_rewards, step_end_mask, scores = self._score(group_problems, texts, out)
        extra = {"components": self._components(scores)} if getattr(self.advantages, "needs_components", False) else {}
        if scores.outcome is not None:  # process_min + a verifier: the outcome as a term of its own
            extra["outcome"] = torch.tensor(scores.outcome)
            if getattr(self.advantages, "outcome_scale", None) is not None:  # ... with its own advantage (decoupled)
                extra["weights"] = scores.weights
        advantages = self.advantages(rewards, G, step_rewards, step_end_mask, **extra)  # [N] or [N, T]
        row_has_signal = (advantages != 0).reshape(len(texts), -1).any(-1)  # [N]
        group_has_signal = row_has_signal.view(-1, G).any(-1)  # [questions]
        t_score = time.perf_counter() - t1
        return Draw(group_problems, texts, prompt_ids, prompt_mask, out, rewards, correct, advantages, group_has_signal,
                    scores, t_gen, t_score)

    def _components(self, scores: Scores) -> dict[str, tuple[float, Tensor]]:
        """For an estimator that normalises each reward component on its own (`needs_components`, e.g. supervision=gdpo):
        {name: (its weight, its values [N], NaN where it abstained)}."""
        weights = {name: c.weight for name, c in WeightedRewards.of(self.reward).components.items()}
        return {name: (weights[name], torch.tensor([float("nan") if v is None else float(v) for v in values], dtype=torch.float64))
                for name, values in scores.components.items()}

    def _score(self, problems, texts, out):
        """rewards [N] (process: each row's mean step reward, for the logs), step tensors [N, T] or None, the Scores."""
        process = self.advantages.needs_step_rewards
        stopped = ~out.truncated.cpu()  # [N] the policy wrote EOS (else max_new_tokens cut it)
        ended = stopped.tolist()  # rewards that take it see it
        apart = process and getattr(self.advantages, "outcome_apart", False)  # the estimator takes the outcome as its own term
        scores = WeightedRewards.of(self.reward).score(problems, texts, process=process, invalid=self.invalid_reward, ended=ended,
                                                       outcome_apart=apart)
        if not process:
            return torch.tensor(scores.rewards), None, None, scores
        step_rewards, step_end_mask = step_reward_tensors(self.tokenizer, out.ids.cpu(), out.mask.cpu(), scores.steps,
                                                           ended=stopped if self.eos_credit else torch.zeros_like(stopped))
        rewards = torch.stack([
            step_rewards[i][step_end_mask[i]].mean() if step_end_mask[i].any() else torch.tensor(0.0) for i in range(len(texts))
        ])
        if scores.outcome is not None:  # the outcome term apart: in the logged reward too
            rewards = rewards + torch.tensor(scores.outcome, dtype=rewards.dtype)
        return rewards, step_rewards, step_end_mask, scores
