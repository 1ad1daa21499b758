"""Per-token log-probabilities of completions under a model (policy, old policy or reference)."""

from __future__ import annotations

import torch
from torch import Tensor

from grpo.rollout.sampler import position_ids_from_mask


def completion_logprobs(
    model, input_ids: Tensor, attention_mask: Tensor, completion_len: int, temperature: float = 1.0, with_entropy: bool = False
) -> tuple[Tensor, Tensor | None]:
    """log pi(o_t | q, o_<t) for the last `completion_len` positions of `input_ids`.

    input_ids, attention_mask: [B, P+T], prompt left-padded then completion right-padded.
    Returns logp [B, T] (float32) and, if asked, the policy entropy per position [B, T].
    Logits are divided by the sampling temperature so that logp is the sampling distribution's.
    Only the last T+1 positions' logits are computed (`logits_to_keep`).
    """
    T = completion_len
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        use_cache=False,
        logits_to_keep=T + 1,
    )
    logits = out.logits[:, -T - 1 : -1].float()  # [B, T, V]: position t predicts token t+1
    if temperature not in (0, 1):
        logits = logits / temperature
    logprobs = torch.log_softmax(logits, dim=-1)
    logp = logprobs.gather(-1, input_ids[:, -T:, None]).squeeze(-1)  # [B, T]
    entropy = None
    if with_entropy:
        entropy = -(logprobs.exp() * logprobs).sum(-1)
    return logp, entropy
