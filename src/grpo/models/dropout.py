"""Dropout off in the policy, on purpose (TRL's `disable_dropout`): RL trainers sample, score (pi_old, pi_ref)
and update with one deterministic function, so that the importance ratio of an on-policy token is exactly 1
and the update's log-probs are those the samples were drawn from.

The policy still runs its update in train mode (grpo.module.GRPOModule.training_step), which gradient
checkpointing needs; with every dropout probability 0, train mode changes nothing else. A model may keep
its dropout (`model.disable_dropout=false`); LoRA's own dropout (`adapter.dropout`) is added after this and
acts in the update whenever it is > 0.
"""

from __future__ import annotations

from torch import nn


def _is_dropout_setting(name: str) -> bool:
    return "dropout" in name or name.endswith("pdrop")  # attention_dropout, hidden_dropout, ...; GPT-2's resid_pdrop


def disable_dropout(model: nn.Module) -> nn.Module:
    """Every dropout of `model` set to probability 0, in place: the nn.Dropout modules, the probabilities that
    attention layers read at call time (e.g. Llama's `attention_dropout`), and the same settings in its config
    (so a copy built from the config has none either). Returns `model`."""
    for module in model.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):
            module.p = 0.0
        for name, value in list(vars(module).items()):
            if isinstance(value, float) and _is_dropout_setting(name):
                setattr(module, name, 0.0)
    config = getattr(model, "config", None)
    configs = [config] + [getattr(config, name) for name in getattr(config, "sub_configs", {}) or {}] if config is not None else []
    for cfg in (c for c in configs if c is not None):
        for name, value in list(vars(cfg).items()):
            if isinstance(value, float) and _is_dropout_setting(name):
                setattr(cfg, name, 0.0)
    return model
