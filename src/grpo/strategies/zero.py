"""DeepSpeed ZeRO (strategy=deepspeed_zero2 | deepspeed_zero3): Lightning's DeepSpeedStrategy, unchanged on
CUDA; on a CPU accelerator it skips Lightning's CUDA-only checks, so CI runs ZeRO-2/3 through the same
code. ZeRO-3 partitions the whole LightningModule, the frozen reference included; generation gathers
the policy once (see `_zero3_gathered`)."""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Iterator

import torch
from lightning.pytorch.plugins.precision import DeepSpeedPrecision
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.strategies import DeepSpeedStrategy as _LightningDeepSpeedStrategy
from lightning.pytorch.strategies.deepspeed import remove_module_hooks
from torch import nn

from grpo.strategies.base import SingleDeviceAdapter, reentrant
from grpo.strategies.weights import is_zero3


class DeepSpeedStrategy(_LightningDeepSpeedStrategy):
    """Lightning's DeepSpeedStrategy; on a CPU accelerator (tests) it also runs, on gloo.

    On CUDA nothing changes. On CPU, Lightning refuses (it checks for CUDA, validates GPU indices
    and passes the device index, None on CPU, to deepspeed.initialize); here those three steps are
    skipped or given the local rank, and DeepSpeed's own CPU accelerator does the rest.
    """

    def _set_precision_plugin(self, plugin) -> None:
        if type(plugin) is DeepSpeedPrecision:  # what Lightning picks for this strategy
            plugin = _DeepSpeedPrecision(plugin.precision)
        self._precision_plugin = plugin

    precision_plugin = property(_LightningDeepSpeedStrategy.precision_plugin.fget, _set_precision_plugin)

    @property
    def _on_cpu(self) -> bool:
        return self.parallel_devices is not None and self.parallel_devices[0].type == "cpu"

    @property
    def root_device(self) -> torch.device:
        device = super().root_device
        return torch.device("cpu", self.local_rank) if device.type == "cpu" else device  # "cpu:1" is plain "cpu" to torch

    def _initialize_deepspeed_train(self, model) -> None:
        # A validate() before fit() leaves the ZeRO-3 hooks of its inference engine on the module, and the
        # training engine's trace then breaks ("pop from an empty deque"); Lightning removes them only
        # before an inference engine. Remove them here too (no-op when there are none).
        remove_module_hooks(model)
        super()._initialize_deepspeed_train(model)

    def setup_environment(self) -> None:
        if self._on_cpu:
            DDPStrategy.setup_environment(self)  # everything but the CUDA check
        else:
            super().setup_environment()

    def setup_distributed(self) -> None:
        if not self._on_cpu:
            return super().setup_distributed()
        from lightning.fabric.utilities.seed import reset_seed

        reset_seed()  # as Lightning's, without its GPU-index validation
        self.set_world_ranks()
        self._init_deepspeed_distributed()


class _DeepSpeedPrecision(DeepSpeedPrecision):
    """Lightning's, except that held-out evaluation batches, lists of (index, Problem) with no tensor in them
    (see RolloutDataModule.transfer_batch_to_device), pass as they are: Lightning's would refuse their frozen
    dataclasses on every device, GPU included."""

    def convert_input(self, data):
        return data if isinstance(data, list) else super().convert_input(data)


class ZeroAdapter(SingleDeviceAdapter):
    """Nothing to configure (no frozen parameter enters DeepSpeed's optimizer); ZeRO-3 gathers for generation."""

    def gathered(self, model: nn.Module, strategy=None):
        return reentrant(model, _zero3_gathered(model, _zero3_coordinator(strategy))) if is_zero3(model) else nullcontext()


_HELD = -1  # a ZeRO-3 "active sub-module" id no module has: DeepSpeed does not release a parameter that has one


@contextmanager
def _zero3_gathered(model: nn.Module, coordinator=None) -> Iterator[None]:
    """ZeRO-3: all-gather `model`'s parameters once and keep DeepSpeed's hooks from releasing them.

    DeepSpeed also records the order in which sub-modules run, to prefetch, and checks at the next
    engine step that every rank recorded the same order: forwards outside the engine's (generation,
    whose length differs between ranks) would fail that check. So the engine's trace is dropped on
    entry (nothing is recorded or prefetched inside) and on exit (the training step records anew).
    """
    import deepspeed

    params = list(model.parameters())
    _forget_trace(coordinator)
    with deepspeed.zero.GatheredParameters(params):
        for p in params:
            p.ds_active_sub_modules.add(_HELD)
        try:
            yield
        finally:
            for p in params:
                p.ds_active_sub_modules.discard(_HELD)
            _forget_trace(coordinator)


def _zero3_coordinator(strategy):
    """The ZeRO-3 parameter coordinator of a DeepSpeed strategy's engine (training or inference), else None."""
    engine = getattr(strategy, "model", None) if isinstance(strategy, _LightningDeepSpeedStrategy) else None
    optimizer = getattr(engine, "optimizer", None)
    offload = getattr(optimizer, "parameter_offload", optimizer)  # stage-3 optimizer, or the inference engine's offload
    return offload.get_param_coordinator() if hasattr(offload, "get_param_coordinator") else None


def _forget_trace(coordinator) -> None:
    if coordinator is not None and not coordinator.is_invalid_trace():
        coordinator._invalidate_trace()


