"""Full weights under any strategy: one HF checkpoint for export, and same-shaped copies (pi_ref <- pi_theta).

The way is chosen from how the model itself is held (FSDP2 modules, ZeRO-3 partitioned parameters,
or plain), so these work on any rank of any strategy. Collective where the model is sharded: every
rank must call them.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


def fsdp_modules(model: nn.Module) -> list:
    from torch.distributed.fsdp import FSDPModule

    return [m for m in model.modules() if isinstance(m, FSDPModule)]


def is_zero3(model: nn.Module) -> bool:
    return any(hasattr(p, "ds_id") for p in model.parameters())


def _rank() -> int:
    return torch.distributed.get_rank() if torch.distributed.is_available() and torch.distributed.is_initialized() else 0


def full_state_dict(model: nn.Module, all_ranks: bool = False) -> dict[str, torch.Tensor]:
    """`model`'s full, unsharded state dict on CPU: on global rank 0 ({} elsewhere) or, with all_ranks, everywhere.

    Collective when the model is sharded (FSDP2, ZeRO-3): every rank must call it. Tied parameters
    (e.g. embeddings and head) come back as one tensor under both names, as in `model.state_dict()`.
    """
    keep = all_ranks or _rank() == 0
    if fsdp_modules(model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        # cpu_offload: rank 0 alone assembles the tensors; without it every rank gets them
        state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=not all_ranks))
        state = {k: v.detach().cpu() for k, v in state.items()}
    elif is_zero3(model):
        state = _zero3_state_dict(model, keep)
    else:
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()} if keep else {}
    if not keep:
        return {}
    return _retie(model, state)


def _zero3_state_dict(model: nn.Module, keep: bool) -> dict[str, torch.Tensor]:
    """Gather one module's own parameters at a time (peak: the largest module, not the model)."""
    import deepspeed

    state = {}
    for prefix, sub in model.named_modules():
        own = dict(sub.named_parameters(recurse=False))
        with deepspeed.zero.GatheredParameters(list(own.values())):
            if keep:
                for name, p in own.items():
                    state[f"{prefix}.{name}" if prefix else name] = p.detach().cpu().clone()
    if keep:
        for name, b in model.named_buffers():
            state[name] = b.detach().cpu().clone()
        order = list(model.state_dict().keys())  # names as state_dict() gives them (persistent buffers only)
        state = {k: state[k] for k in order if k in state}
    return state


def _retie(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Entries of parameters shared in `model` (tied weights) point to one tensor again."""
    first: dict[int, str] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if name in state:
            if id(p) in first:
                state[name] = state[first[id(p)]]
            else:
                first[id(p)] = name
    return state


def export_pretrained(model, tokenizer, path, is_global_zero: bool, lora=None) -> None:
    """One full transformers checkpoint (`save_pretrained`) at `path`, written by rank 0. Call on every rank.

    lora: the settings of the model's LoRA adapters: they are merged into the weights (a plain checkpoint), and
    with `lora.save_adapter` also written alone to `path/adapter` (peft format)."""
    state = full_state_dict(model)
    if is_global_zero:
        if lora is not None:
            from grpo.models.adapters import merge_lora_state

            if lora.save_adapter:
                lora.save(state, Path(path) / "adapter", base=getattr(model, "name_or_path", None))
            state = merge_lora_state(state, lora.scaling)
        model.save_pretrained(path, state_dict=state)
        tokenizer.save_pretrained(path)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


@torch.no_grad()
def copy_weights(src: nn.Module, dst: nn.Module) -> None:
    """dst <- src (same architecture) under any strategy, e.g. pi_ref <- pi_theta at an iteration of Algorithm 1.

    Both sharded alike (FSDP2 with shard_frozen, ZeRO-3) or both plain: shard-to-shard copies, no
    communication beyond ZeRO-3's per-module gathers. One sharded and the other not: through the
    full state dict. Call on every rank.
    """
    src_fsdp, dst_fsdp = bool(fsdp_modules(src)), bool(fsdp_modules(dst))
    if src_fsdp == dst_fsdp and not is_zero3(src) and not is_zero3(dst):
        dst.load_state_dict(src.state_dict())
    elif is_zero3(src) and is_zero3(dst):
        import deepspeed

        src_params = dict(src.named_parameters())
        for name, p in dst.named_parameters():
            with deepspeed.zero.GatheredParameters([p, src_params[name]], modifier_rank=0):
                p.copy_(src_params[name])
    else:
        state = full_state_dict(src, all_ranks=True)
        if dst_fsdp:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

            set_model_state_dict(dst, state, options=StateDictOptions(full_state_dict=True))
        else:
            dst.load_state_dict(state)


