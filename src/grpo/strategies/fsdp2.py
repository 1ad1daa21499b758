"""fsdp: FSDP2 (`torch.distributed.fsdp.fully_shard`) per decoder layer, then the model's root.

`FSDP2Strategy` is Lightning's ModelParallelStrategy applying it. The policy is sharded for training;
the frozen reference (any frozen child of the LightningModule) is sharded too (forward only, nothing
to synchronise) unless shard_frozen=false. Runs on CUDA (NCCL) and on CPU (gloo), so CI tests it.
Generation gathers the full policy once per rollout (and per validation epoch), not once per decoded
token: the sampler stops when this rank's rows are done, so ranks decode different numbers of
tokens, and per-layer all-gathers inside decoding would not line up across ranks. The full policy
must fit on one device.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Iterator

from lightning.pytorch.strategies import ModelParallelStrategy
from torch import nn

from grpo.strategies.base import POLICY, SingleDeviceAdapter, frozen_models, reentrant
from grpo.strategies.weights import fsdp_modules


class FSDP2Strategy(ModelParallelStrategy):
    """FSDP2 data parallelism: every rank samples its own questions; parameters, gradients and
    optimizer state are sharded across ranks.

    hybrid_shard: false shards across all ranks (FSDP); true shards within a node and replicates
        across nodes (HSDP: all-gathers stay on the node's fast links; Lightning's 2-D device mesh).
    shard_frozen: also shard the frozen reference: 1/world of its memory per rank, one all-gather
        per layer per forward. false keeps full replicas (no communication).
    Other arguments go to ModelParallelStrategy (e.g. save_distributed_checkpoint: true writes a
    folder of per-rank shards, false one file gathered on rank 0).
    """

    def __init__(self, hybrid_shard: bool = False, shard_frozen: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.hybrid_shard, self.shard_frozen = hybrid_shard, shard_frozen

    def fsdp_mesh(self):
        """HSDP: Lightning's 2-D (nodes, devices per node) mesh; FSDP: a 1-D mesh over all ranks."""
        return self.device_mesh if self.hybrid_shard else world_mesh(self)


def world_mesh(strategy):
    """A 1-D device mesh over all ranks, on the strategy's device type (not torch's default, which picks
    CUDA whenever it is present, even for a CPU run)."""
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh(strategy.root_device.type, (strategy.world_size,), mesh_dim_names=("data_parallel",))


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The model's repeated blocks: transformers' `_no_split_modules` classes (outermost), else the longest ModuleList."""
    names = set(getattr(model, "_no_split_modules", None) or ())
    layers, taken = [], []
    for path, sub in model.named_modules():
        if sub is not model and type(sub).__name__ in names and not any(path.startswith(t + ".") for t in taken):
            layers.append(sub)
            taken.append(path)
    if not layers:
        lists = [m for m in model.modules() if isinstance(m, nn.ModuleList)]
        layers = list(max(lists, key=len)) if lists else []
    return layers


def shard_fsdp2(model: nn.Module, mesh=None, trains: bool = True) -> nn.Module:
    """fully_shard each decoder layer, then the root (embeddings, final norm, head). Idempotent.

    Layers free their gathered parameters after forward; the root of a model that trains keeps them
    until backward, which needs them first (torch's own default); a frozen model frees everything.
    """
    from torch.distributed.fsdp import FSDPModule, fully_shard

    if isinstance(model, FSDPModule):
        return model
    for layer in decoder_layers(model):
        fully_shard(layer, mesh=mesh, reshard_after_forward=True)
        layer._grpo_reshard_after_forward = True
    fully_shard(model, mesh=mesh, reshard_after_forward=not trains)
    model._grpo_reshard_after_forward = not trains
    return model


class FSDP2Adapter(SingleDeviceAdapter):
    def configure(self, module: nn.Module, strategy) -> None:
        """FSDP2 on the policy and (unless shard_frozen=false) on the frozen models; nothing if already sharded."""
        from torch.distributed.fsdp import FSDPModule

        if isinstance(getattr(module, POLICY), FSDPModule):
            return  # sharded at an earlier fit/validate
        mesh = strategy.fsdp_mesh() if isinstance(strategy, FSDP2Strategy) else world_mesh(strategy)
        frozen = frozen_models(module)
        shard_fsdp2(getattr(module, POLICY), mesh=mesh, trains=True)
        if getattr(strategy, "shard_frozen", True):
            for model in frozen.values():
                shard_fsdp2(model, mesh=mesh, trains=False)

    def gathered(self, model: nn.Module, strategy=None):
        modules = fsdp_modules(model)
        return reentrant(model, _fsdp2_gathered(modules)) if modules else nullcontext()


@contextmanager
def _fsdp2_gathered(fsdp_modules: list) -> Iterator[None]:
    for m in fsdp_modules:
        m.set_reshard_after_forward(False, recurse=False)
    handles = [m.unshard(async_op=True) for m in fsdp_modules]
    for h in handles:
        if h is not None:
            h.wait()
    try:
        yield
    finally:
        for m in fsdp_modules:
            m.reshard()
            m.set_reshard_after_forward(getattr(m, "_grpo_reshard_after_forward", True), recurse=False)


