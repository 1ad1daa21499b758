"""What every strategy adapter shares: the single-device behaviour (nothing to do), re-entrant gathering, and
which children of the LightningModule are frozen models."""

from __future__ import annotations

from contextlib import contextmanager, nullcontext

from torch import nn

from grpo.strategies.weights import copy_weights, full_state_dict

POLICY = "policy"  # the GRPOModule attribute that trains; every other child with parameters is frozen


def frozen_models(module: nn.Module) -> dict[str, nn.Module]:
    """Children of the LightningModule other than the policy whose parameters all are frozen (the reference)."""
    return {
        name: child
        for name, child in module.named_children()
        if name != POLICY and any(True for _ in child.parameters()) and not any(p.requires_grad for p in child.parameters())
    }


class SingleDeviceAdapter:
    """One device (strategy=auto): nothing is sharded or wrapped."""

    def configure(self, module: nn.Module, strategy) -> None:
        pass

    def gathered(self, model: nn.Module, strategy=None):
        return nullcontext()

    full_state_dict = staticmethod(full_state_dict)  # the way is chosen from how the model is held
    copy_weights = staticmethod(copy_weights)


@contextmanager
def reentrant(model: nn.Module, context):
    """`context` on the first entry; an inner use (a generate() inside a gathered validation epoch) does nothing."""
    if getattr(model, "_grpo_gathered", False):
        yield
        return
    with context:
        model._grpo_gathered = True
        try:
            yield
        finally:
            model._grpo_gathered = False
