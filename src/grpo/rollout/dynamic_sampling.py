"""DAPO's dynamic sampling (arXiv 2503.14476, Sec 3.2) inside one rollout: which groups of several
generation batches the update holds, and those groups as one batch.

GroupRollout draws generation batches (`Draw`) while too few groups have reward spread, then
`select_groups` picks a fixed number of them and `merge_groups` lays them out as one rollout.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from grpo.rollout.sampler import Completions


@dataclass
class Draw:
    """One generation batch of B questions, N = B x G rows (each question's group contiguous)."""

    problems: list  # [N] the question of each row
    texts: list  # [N] decoded completions
    prompt_ids: Tensor  # [B, P] left-padded
    prompt_mask: Tensor  # [B, P]
    out: Completions  # ids, mask [N, T] right-padded; truncated [N]
    rewards: Tensor  # [N] (process: each row's mean step reward)
    correct: Tensor  # [N] 0/1, the task's verifier
    advantages: Tensor  # [N] or [N, T]
    group_has_signal: Tensor  # [B] bool: some advantage of the group is non-zero
    scores: object  # grpo.rewards.combine.Scores: each component's values, invalid values counted as 0
    t_gen: float
    t_score: float


def select_groups(has_signal: list[Tensor], groups: int) -> list[tuple[int, int, bool]]:
    """Dynamic sampling's choice (DAPO, arXiv 2503.14476, Sec 3.2): the `groups` groups the update holds.

    has_signal: per generation batch, [B_k] bool (the group has reward spread). Returns (batch, group,
    informative) triples: the informative groups in the order drawn, at most `groups` of them (the rest
    are dropped), then, if too few were found, the first flat groups drawn as fillers (informative False:
    their tokens are kept out of the loss). The update's size never varies, so the mini-batch plan and
    every rank's number of updates stay fixed.
    e.g. has_signal [[T, F, T], [F, T, T]], groups 3 -> (0, 0, T), (0, 2, T), (1, 1, T);
         has_signal [[F, T, F]], groups 2 -> (0, 1, T), (0, 0, F).
    """
    found = [(k, g, bool(s)) for k, flags in enumerate(has_signal) for g, s in enumerate(flags.tolist())]
    informative = [f for f in found if f[2]][:groups]
    fillers = [f for f in found if not f[2]][: groups - len(informative)]
    if len(informative) + len(fillers) < groups:
        raise ValueError(f"dynamic sampling drew {len(found)} groups, fewer than the {groups} the update holds: "
                         "raise grpo.dynamic_sampling.max_extra_batches or lower grpo.dynamic_sampling.groups")
    return informative + fillers


def _pad_to(x: Tensor, width: int, value, left: bool = False) -> Tensor:
    """[R, W] -> [R, width], padded with `value` on the left or the right."""
    pad = x.new_full((x.shape[0], width - x.shape[1]) + tuple(x.shape[2:]), value)
    return torch.cat([pad, x] if left else [x, pad], dim=1)


def _tool_fields(rows_taken: list, T: int) -> dict:
    """Completions' tool fields of the chosen rows (tool_mask right-padded to T), or {} when sampled without tools."""
    if rows_taken[0][0].tool_mask is None:
        return {}
    fields = {"tool_mask": torch.cat([_pad_to(out.tool_mask[rows], T, False) for out, rows in rows_taken])}
    for name in ("tool_calls", "tool_errors", "tool_seconds"):
        fields[name] = torch.cat([getattr(out, name)[rows] for out, rows in rows_taken])
    return fields


def merge_groups(draws: list[Draw], chosen: list[tuple[int, int, bool]], G: int, pad_token_id: int):
    """The chosen groups of several generation batches as one rollout: prompt_ids, prompt_mask [K, P]
    (left-padded to the widest prompt), Completions [K*G, T] (right-padded to the longest completion),
    advantages [K*G] or [K*G, T] (0 on padding) and informative [K] bool, K = len(chosen)."""
    P = max(d.prompt_ids.shape[1] for d in draws)
    T = max(d.out.ids.shape[1] for d in draws)
    prompts, prompt_masks, ids, masks, truncated, advantages, logps, rows_taken = [], [], [], [], [], [], [], []
    for k, g, _ in chosen:
        d, rows = draws[k], slice(g * G, (g + 1) * G)
        prompts.append(_pad_to(d.prompt_ids[g : g + 1], P, pad_token_id, left=True))
        prompt_masks.append(_pad_to(d.prompt_mask[g : g + 1], P, 0, left=True))
        ids.append(_pad_to(d.out.ids[rows], T, pad_token_id))
        masks.append(_pad_to(d.out.mask[rows], T, False))
        truncated.append(d.out.truncated[rows])
        rows_taken.append((d.out, rows))
        logps.append(None if d.out.logp is None else _pad_to(d.out.logp[rows], T, 0.0))
        adv = d.advantages[rows]
        advantages.append(_pad_to(adv, T, 0.0) if adv.dim() == 2 else adv)
    logp = None if any(x is None for x in logps) else torch.cat(logps)  # the sampler's log-probs, if the engine gave them
    out = Completions(ids=torch.cat(ids), mask=torch.cat(masks), truncated=torch.cat(truncated), logp=logp,
                      **_tool_fields(rows_taken, T))
    informative = torch.tensor([c[2] for c in chosen], dtype=torch.bool)
    return torch.cat(prompts), torch.cat(prompt_masks), out, torch.cat(advantages), informative
