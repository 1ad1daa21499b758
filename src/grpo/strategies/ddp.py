"""ddp: the frozen reference stays a plain replica per process, left out of DDP (no broadcast, no gradient hooks)."""

from __future__ import annotations

from torch import nn

from grpo.strategies.base import SingleDeviceAdapter, frozen_models


class DDPAdapter(SingleDeviceAdapter):
    def configure(self, module: nn.Module, strategy) -> None:
        ignore = [
            f"{name}.{key}"
            for name, model in frozen_models(module).items()
            for key, _ in [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]
        ]
        nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, ignore)
