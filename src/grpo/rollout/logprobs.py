"""Per-token log-probabilities of completions under a model (policy, old policy or reference).

Two ways to the same numbers:

- padded: the rows as given, `[B, P+T]`, each prompt repeated in every row of its group and every
  completion padded to the longest (what every trainer does).
- group-packed: the rows of a group share their prompt, so each group becomes one packed
  sequence `prompt, completion_1, ..., completion_k` with a block mask: completion j sees the
  prompt and itself, causally, never another completion. The prompt is encoded once per group
  instead of G times and no completion is padded, so a GRPO update or a reference pass costs the
  real tokens only (about 2.5x fewer positions at G=8 and the default task). Logits are computed
  only where a completion token is predicted. Used when it saves positions, for decoder-only
  architectures whose attention honours a 4-D mask (sdpa, eager); anything else takes the padded way.
"""

from __future__ import annotations

import torch
from torch import Tensor

from grpo.rollout.sampler import position_ids_from_mask

PACKABLE_MODEL_TYPES = ("llama", "qwen2", "qwen3")  # decoder(...) then lm_head(hidden): nothing in between
PACK_WIDTH = 1024  # longest packed sequence; a group whose prompt + completions exceed it takes several rows
PACK_IF_SAVES = 0.75  # pack only when the packed positions are at most this share of the padded ones


def completion_logprobs(
    model, input_ids: Tensor, attention_mask: Tensor, completion_len: int, temperature: float = 1.0, with_entropy: bool = False
) -> tuple[Tensor, Tensor | None]:
    """log pi(o_t | q, o_<t) for the last `completion_len` positions of `input_ids`.

    input_ids, attention_mask: [B, P+T], prompt left-padded then completion right-padded.
    Returns logp [B, T] (float32) and, if asked, the policy entropy per position [B, T]; only
    positions where attention_mask is 1 are meaningful (the group-packed way leaves 0 elsewhere).
    Logits are divided by the sampling temperature so that logp is the sampling distribution's.
    """
    plan = _pack_plan(model, input_ids, attention_mask, completion_len)
    if plan is not None:
        return _packed_logprobs(model, plan, temperature, with_entropy)
    return _padded_logprobs(model, input_ids, attention_mask, completion_len, temperature, with_entropy)


def _token_logprobs(logits: Tensor, targets: Tensor, temperature: float, with_entropy: bool) -> tuple[Tensor, Tensor | None]:
    """logits [..., V], targets [...] -> log-prob of each target [...] (float32) and the entropy [...] if asked."""
    logits = logits.float()
    if temperature not in (0, 1):
        logits = logits / temperature
    logprobs = torch.log_softmax(logits, dim=-1)
    logp = logprobs.gather(-1, targets[..., None]).squeeze(-1)
    entropy = -(logprobs.exp() * logprobs).sum(-1) if with_entropy else None
    return logp, entropy


def _padded_logprobs(model, input_ids, attention_mask, T, temperature, with_entropy):
    """Every row as given; only the last T+1 positions' logits are computed (`logits_to_keep`)."""
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        use_cache=False,
        logits_to_keep=T + 1,
    )
    logits = out.logits[:, -T - 1 : -1]  # [B, T, V]: position t predicts token t+1
    return _token_logprobs(logits, input_ids[:, -T:], temperature, with_entropy)


# ---------------------------------------------------------------- group packing
def _packable(model) -> bool:
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) not in PACKABLE_MODEL_TYPES or getattr(config, "use_sliding_window", False):
        return False
    if getattr(config, "_attn_implementation", None) not in ("sdpa", "eager"):
        return False
    if not (hasattr(model, "model") and hasattr(model, "lm_head")):
        return False
    try:  # FSDP2 unshards the root's parameters in the root's forward, which this way goes around
        from torch.distributed.fsdp import FSDPModule

        return not isinstance(model, FSDPModule)
    except ImportError:
        return True


def _pack_plan(model, input_ids: Tensor, attention_mask: Tensor, T: int) -> dict | None:
    """Where every token goes in the group-packed layout, or None when packing does not apply or save."""
    B, L = input_ids.shape
    P = L - T
    if B < 2 or T < 1 or P < 1 or not _packable(model):
        return None
    device = input_ids.device
    prompt_mask, comp_mask = attention_mask[:, :P].bool(), attention_mask[:, P:].bool()
    p_len, c_len = prompt_mask.sum(1), comp_mask.sum(1)  # [B]
    left_padded = prompt_mask.equal(torch.arange(P, device=device) >= (P - p_len)[:, None])
    right_padded = comp_mask.equal(torch.arange(T, device=device) < c_len[:, None])
    if not (left_padded and right_padded) or int(p_len.min()) < 1 or int(c_len.sum()) == 0:
        return None
    key = input_ids[:, :P].masked_fill(~prompt_mask, -1)  # rows with equal keys share their prompt
    _, group = torch.unique(key, dim=0, return_inverse=True)  # [B]

    # bins: (first row of the group, its prompt length, rows), each at most PACK_WIDTH long
    p_list, c_list, g_list = p_len.tolist(), c_len.tolist(), group.tolist()
    bins, open_bin = [], {}
    for i in range(B):
        b = open_bin.get(g_list[i])
        if b is None or (b[3] + c_list[i] > PACK_WIDTH and b[2]):
            b = [i, p_list[i], [], p_list[i]]  # [prompt row, prompt length, rows, packed length]
            bins.append(b)
            open_bin[g_list[i]] = b
        b[2].append(i)
        b[3] += c_list[i]
    width = max(b[3] for b in bins)
    if len(bins) * width > PACK_IF_SAVES * B * L:
        return None

    # per packed position: source (row, column) in input_ids, segment (0 prompt, j completion j, -1 pad), position id
    n = len(bins)
    src_row = torch.zeros(n, width, dtype=torch.long)
    src_col = torch.zeros(n, width, dtype=torch.long)
    segment = torch.full((n, width), -1, dtype=torch.long)
    position = torch.zeros(n, width, dtype=torch.long)
    out_bin, out_slot, out_row, out_t = [], [], [], []  # the position whose logits predict completion token (row, t)
    for k, (prow, p, rows, _) in enumerate(bins):
        src_row[k, :p] = prow
        src_col[k, :p] = torch.arange(P - p, P)
        segment[k, :p] = 0
        position[k, :p] = torch.arange(p)
        start = p
        for j, i in enumerate(rows, start=1):
            c = c_list[i]
            src_row[k, start : start + c] = i
            src_col[k, start : start + c] = torch.arange(P, P + c)
            segment[k, start : start + c] = j
            position[k, start : start + c] = torch.arange(p, p + c)
            out_bin.append(torch.full((c,), k))
            out_slot.append(torch.cat([torch.tensor([p - 1]), torch.arange(start, start + c - 1)]))
            out_row.append(torch.full((c,), i))
            out_t.append(torch.arange(c))
            start += c
    src_row, src_col, segment, position = (x.to(device) for x in (src_row, src_col, segment, position))
    packed_ids = input_ids[src_row, src_col].masked_fill(segment < 0, 0)  # [n, W]
    # q sees k iff k <= q and (k is in q's segment or in the prompt); padding sees itself (no empty rows)
    idx = torch.arange(width, device=device)
    causal = idx[None, :] <= idx[:, None]  # [W, W]
    same = (segment[:, None, :] == segment[:, :, None]) | (segment[:, None, :] == 0)  # [n, W(q), W(k)]
    allowed = (causal & same) | torch.eye(width, dtype=torch.bool, device=device)
    out_row, out_t = torch.cat(out_row).to(device), torch.cat(out_t).to(device)
    return dict(
        ids=packed_ids,
        allowed=allowed[:, None],  # [n, 1, W, W]
        position=position,
        gather=(torch.cat(out_bin).to(device), torch.cat(out_slot).to(device)),
        scatter=(out_row, out_t),
        targets=input_ids[out_row, P + out_t],
        shape=(B, T),
    )


def _packed_logprobs(model, plan: dict, temperature: float, with_entropy: bool) -> tuple[Tensor, Tensor | None]:
    mask = plan["allowed"]
    if model.config._attn_implementation == "eager":  # eager attention adds the mask to the scores
        dtype = next(model.parameters()).dtype
        mask = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)
    hidden = model.model(input_ids=plan["ids"], attention_mask=mask, position_ids=plan["position"], use_cache=False)
    hidden = hidden.last_hidden_state[plan["gather"]]  # [N_tokens, H]: only where a completion token is predicted
    logp_tok, entropy_tok = _token_logprobs(model.lm_head(hidden), plan["targets"], temperature, with_entropy)
    B, T = plan["shape"]
    logp = logp_tok.new_zeros(B, T).index_put(plan["scatter"], logp_tok)
    entropy = entropy_tok.new_zeros(B, T).index_put(plan["scatter"], entropy_tok) if with_entropy else None
    return logp, entropy
