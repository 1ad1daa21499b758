"""What a model can do, asked of its config: the fast paths (group-packed log-probs, the one-token
decoder) apply only where these say so; anything else takes transformers' own forward."""

from __future__ import annotations

import torch
from torch import Tensor


def full_attention_only(config) -> bool:
    """True when every layer attends to the whole context (no sliding window), so one mask serves all layers."""
    layer_types = getattr(config, "layer_types", None)
    if layer_types and any(t != "full_attention" for t in layer_types):
        return False
    if getattr(config, "use_sliding_window", None) is False:
        return True
    return getattr(config, "sliding_window", None) is None


def plain_decoder(model, model_types: tuple[str, ...]) -> bool:
    """True when `model` can be driven layer by layer with an explicit 4-D mask: its type is one of
    `model_types`, every layer attends to the whole context, its attention is sdpa or eager (both take
    the mask as given), and it is not an FSDP2 module (whose root forward, gone around here, gathers
    the parameters)."""
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) not in model_types or not full_attention_only(config):
        return False
    if getattr(config, "_attn_implementation", None) not in ("sdpa", "eager"):
        return False
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:
        return True
    return not isinstance(model, FSDPModule)


def attention_kernel_mask(model, allowed: Tensor) -> Tensor:
    """A boolean 4-D mask (True = may attend) as `model`'s attention implementation takes it: sdpa the
    boolean itself, eager an additive float mask (0 where allowed, the dtype's minimum elsewhere)."""
    if getattr(model.config, "_attn_implementation", None) != "eager":
        return allowed
    dtype = next(model.parameters()).dtype
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)


def position_ids_from_mask(attention_mask: Tensor) -> Tensor:
    """[B, L] positions counting only real tokens, so left padding does not shift positions."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
