"""What each Lightning strategy needs from GRPO: one adapter per strategy (the `strategy` config group).

An adapter says, for its strategy:
- `configure(module, strategy)`: what to do to the LightningModule before the strategy wraps it
  (GRPOModule.configure_model; idempotent: Lightning calls it at every fit/validate);
- `gathered(model, strategy)`: a context in which a sharded model's full parameters stay gathered
  across forwards (generation: one collective on entry, none per decoded token);
- `full_state_dict(model, all_ranks)` and `copy_weights(src, dst)`: full weights for export, and
  pi_ref <- pi_theta (see grpo.strategies.weights, which picks the way from how the model is sharded).

`adapter_for(strategy)` picks the adapter: fsdp (FSDP2, grpo.strategies.fsdp2), DeepSpeed ZeRO
(grpo.strategies.zero), ddp (grpo.strategies.ddp), anything else one device (grpo.strategies.base).
"""

from __future__ import annotations

from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy, ModelParallelStrategy

from grpo.strategies.base import SingleDeviceAdapter
from grpo.strategies.ddp import DDPAdapter
from grpo.strategies.fsdp2 import FSDP2Adapter
from grpo.strategies.zero import ZeroAdapter


def adapter_for(strategy):
    """The adapter of a Lightning strategy instance (None or a name: one device)."""
    if isinstance(strategy, ModelParallelStrategy):
        return FSDP2Adapter()
    if isinstance(strategy, DeepSpeedStrategy):  # a DDPStrategy subclass: checked first
        return ZeroAdapter()
    if isinstance(strategy, DDPStrategy):
        return DDPAdapter()
    return SingleDeviceAdapter()
