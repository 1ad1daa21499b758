"""What each Lightning strategy needs from GRPO: one adapter per strategy (the `strategy` config group).

An adapter says, for its strategy:
- `configure(module, strategy)`: what to do to the LightningModule before the strategy wraps it
  (GRPOModule.configure_model; idempotent: Lightning calls it at every fit/validate);
- `gathered(model, strategy)`: a context in which a sharded model's full parameters stay gathered
  across forwards (generation: one collective on entry, none per decoded token);
- `full_state_dict(model, all_ranks)` and `copy_weights(src, dst)`: full weights for export, and
  pi_ref <- pi_theta (see grpo.strategies.weights, which picks the way from how the model is sharded).

`adapter_for(strategy)` picks the adapter: fsdp (FSDP2, grpo.strategies.fsdp2), DeepSpeed ZeRO
(grpo.strategies.zero), ddp (grpo.strategies.ddp), anything else one device (this file).
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext

from torch import nn

from grpo.strategies import weights

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

    full_state_dict = staticmethod(weights.full_state_dict)
    copy_weights = staticmethod(weights.copy_weights)


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


def adapter_for(strategy):
    """The adapter of a Lightning strategy instance (None or a name: one device)."""
    from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy, ModelParallelStrategy

    from grpo.strategies.ddp import DDPAdapter
    from grpo.strategies.fsdp2 import FSDP2Adapter
    from grpo.strategies.zero import ZeroAdapter

    if isinstance(strategy, ModelParallelStrategy):
        return FSDP2Adapter()
    if isinstance(strategy, DeepSpeedStrategy):  # a DDPStrategy subclass: checked first
        return ZeroAdapter()
    if isinstance(strategy, DDPStrategy):
        return DDPAdapter()
    return SingleDeviceAdapter()
