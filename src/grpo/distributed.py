"""Scaling out: what each Lightning strategy (the `strategy` config group) needs from GRPO.

- fsdp (`FSDP2Strategy`): Lightning's ModelParallelStrategy applying FSDP2
  (`torch.distributed.fsdp.fully_shard`) per decoder layer, then to the model's root. The policy is
  sharded for training; the frozen reference (any frozen child of the LightningModule) is sharded
  too (forward only, nothing to synchronise). Runs on CUDA (NCCL) and on CPU (gloo), so CI tests it.
- ddp: the frozen reference stays a plain replica, left out of DDP (no broadcast, no gradient hooks).
- deepspeed (`DeepSpeedStrategy`): Lightning's DeepSpeedStrategy, unchanged on CUDA; on a CPU
  accelerator it skips Lightning's CUDA-only checks, so CI runs ZeRO-2/3 through the same code.
  ZeRO-3 partitions the whole LightningModule, the frozen reference included.
(The learned reward model of reward=model is not a child of the LightningModule: a plain replica
per rank under every strategy, retrained data-parallel by rm_schedule=iterative.)

Helpers for the module and the pipeline, each a no-op where the strategy does not need it:
- `configure_for_strategy(module, strategy)`: GRPOModule.configure_model.
- `gathered_for_generation(model)`: a sharded policy's full parameters gathered once per rollout
  (and once per validation epoch), not once per decoded token. Also what makes sharded generation
  work at all: the sampler stops when this rank's rows are done, so ranks decode different numbers
  of tokens, and per-layer all-gathers inside decoding would not line up across ranks. The full
  policy must fit on one device.
- `full_state_dict(model)`, `export_pretrained(...)`: one full HF checkpoint written by rank 0.
- `copy_weights(src, dst)`: pi_ref <- pi_theta (or any same-shaped copy) under every strategy.
- `hydra_job_scope()`, `launched_rank_argv(argv)`: the processes Lightning launches for a Hydra job
  run that job only (Lightning replays the whole command line, so under `-m` rank 1 would replay
  the sweep into a second folder), and each job of a sweep launches its own.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from typing import Iterator

import torch
from lightning.pytorch.plugins.precision import DeepSpeedPrecision
from lightning.pytorch.strategies import DDPStrategy, ModelParallelStrategy
from lightning.pytorch.strategies import DeepSpeedStrategy as _LightningDeepSpeedStrategy
from lightning.pytorch.strategies.deepspeed import remove_module_hooks
from torch import nn

POLICY = "policy"  # the GRPOModule attribute that trains; every other child with parameters is frozen


# ---------------------------------------------------------------- strategies
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
        return self.device_mesh if self.hybrid_shard else _world_mesh(self)


def _world_mesh(strategy):
    """A 1-D device mesh over all ranks, on the strategy's device type (not torch's default, which picks
    CUDA whenever it is present, even for a CPU run)."""
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh(strategy.root_device.type, (strategy.world_size,), mesh_dim_names=("data_parallel",))


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


# ---------------------------------------------------------------- sharding (GRPOModule.configure_model)
def frozen_models(module: nn.Module) -> dict[str, nn.Module]:
    """Children of the LightningModule other than the policy whose parameters all are frozen (the reference)."""
    return {
        name: child
        for name, child in module.named_children()
        if name != POLICY and any(True for _ in child.parameters()) and not any(p.requires_grad for p in child.parameters())
    }


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


def configure_for_strategy(module: nn.Module, strategy) -> None:
    """What `strategy` needs done to the LightningModule before it wraps it (idempotent: Lightning calls
    configure_model at every fit/validate).

    ModelParallelStrategy: FSDP2 on the policy and (unless shard_frozen=false) on the frozen models.
    DDP: the frozen models are left out of DDP. One device and DeepSpeed: nothing (ZeRO-3 partitions
    the whole module, frozen models included, and no frozen parameter enters its optimizer).
    """
    if isinstance(strategy, ModelParallelStrategy):
        from torch.distributed.fsdp import FSDPModule

        if isinstance(getattr(module, POLICY), FSDPModule):
            return  # sharded at an earlier fit/validate
        mesh = strategy.fsdp_mesh() if isinstance(strategy, FSDP2Strategy) else _world_mesh(strategy)
        frozen = frozen_models(module)
        shard_fsdp2(getattr(module, POLICY), mesh=mesh, trains=True)
        if getattr(strategy, "shard_frozen", True):
            for model in frozen.values():
                shard_fsdp2(model, mesh=mesh, trains=False)
    elif isinstance(strategy, DDPStrategy) and not isinstance(strategy, _LightningDeepSpeedStrategy):
        ignore = [
            f"{name}.{key}"
            for name, model in frozen_models(module).items()
            for key, _ in [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]
        ]
        nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, ignore)


# ---------------------------------------------------------------- generation
def _fsdp_modules(model: nn.Module) -> list:
    from torch.distributed.fsdp import FSDPModule

    return [m for m in model.modules() if isinstance(m, FSDPModule)]


def _is_zero3(model: nn.Module) -> bool:
    return any(hasattr(p, "ds_id") for p in model.parameters())


@contextmanager
def gathered_for_generation(model: nn.Module, strategy=None) -> Iterator[None]:
    """Inside, `model`'s parameters are gathered (FSDP2, ZeRO-3) and stay so across forwards.

    One collective on entry, none inside: every rank must enter it the same number of times, but may
    run any number of forwards inside (ranks stop decoding at different steps). Re-entrant: an inner
    use (a generate() inside a gathered validation epoch) does nothing. Peak memory inside: the full
    model on each rank. No-op for a model that is not sharded. `strategy`: the Trainer's, needed
    under ZeRO-3 (see `_zero3_gathered`).
    """
    if getattr(model, "_grpo_gathered", False):
        yield
        return
    fsdp = _fsdp_modules(model)
    if fsdp:
        context = _fsdp2_gathered(fsdp)
    elif _is_zero3(model):
        context = _zero3_gathered(model, _zero3_coordinator(strategy))
    else:
        yield
        return
    with context:
        model._grpo_gathered = True
        try:
            yield
        finally:
            model._grpo_gathered = False


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


# ---------------------------------------------------------------- full weights: export and copies
def _rank() -> int:
    return torch.distributed.get_rank() if torch.distributed.is_available() and torch.distributed.is_initialized() else 0


def full_state_dict(model: nn.Module, all_ranks: bool = False) -> dict[str, torch.Tensor]:
    """`model`'s full, unsharded state dict on CPU: on global rank 0 ({} elsewhere) or, with all_ranks, everywhere.

    Collective when the model is sharded (FSDP2, ZeRO-3): every rank must call it. Tied parameters
    (e.g. embeddings and head) come back as one tensor under both names, as in `model.state_dict()`.
    """
    keep = all_ranks or _rank() == 0
    if _fsdp_modules(model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        # cpu_offload: rank 0 alone assembles the tensors; without it every rank gets them
        state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=not all_ranks))
        state = {k: v.detach().cpu() for k, v in state.items()}
    elif _is_zero3(model):
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


def export_pretrained(model, tokenizer, path, is_global_zero: bool) -> None:
    """One full transformers checkpoint (`save_pretrained`) at `path`, written by rank 0. Call on every rank."""
    state = full_state_dict(model)
    if is_global_zero:
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
    src_fsdp, dst_fsdp = bool(_fsdp_modules(src)), bool(_fsdp_modules(dst))
    if src_fsdp == dst_fsdp and not _is_zero3(src) and not _is_zero3(dst):
        dst.load_state_dict(src.state_dict())
    elif _is_zero3(src) and _is_zero3(dst):
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


# ---------------------------------------------------------------- Hydra: the processes Lightning launches
JOB_ENV = "GRPO_HYDRA_JOB"  # set inside a Hydra job (hydra_job_scope); inherited by the processes Lightning launches
_CONFIG_FLAGS = ("--config-path", "-cp", "--config-dir", "-cd")
# Hydra overrides a launched rank needs to compose and run the job as rank 0 did (not the sweep's or launcher's)
_FORWARDED_HYDRA = ("hydra.searchpath", "hydra.job.", "hydra.verbose", "hydra/job_logging", "hydra/hydra_logging", "hydra.job_logging", "hydra.hydra_logging")


_LAUNCH_ENV = ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", JOB_ENV)


@contextmanager
def hydra_job_scope() -> Iterator[None]:
    """Wrap one Hydra job's run (inside the @hydra.main function) so that multi-process strategies work under `-m`.

    On entry: record the job (task overrides, config name, output folder) for the processes Lightning
    is about to launch (`launched_rank_argv`). On exit, if this process launched them: destroy the
    process group and drop the variables Lightning set, so the sweep's next job launches its own
    processes (Lightning would otherwise take LOCAL_RANK=0 as "launched externally" and talk to the
    finished job's processes). Under torchrun or SLURM (processes created outside) it changes nothing.
    """
    from hydra.core.hydra_config import HydraConfig

    launcher_here = "LOCAL_RANK" not in os.environ
    saved = {key: os.environ.get(key) for key in _LAUNCH_ENV}
    if HydraConfig.initialized():
        hc = HydraConfig.get()
        hydra_overrides = [o for o in hc.overrides.hydra if o.startswith(_FORWARDED_HYDRA) and not o.startswith("hydra.job.name")]
        os.environ[JOB_ENV] = json.dumps(
            {"overrides": [*hydra_overrides, *hc.overrides.task], "config_name": hc.job.config_name, "output_dir": hc.runtime.output_dir}
        )
    try:
        yield
    finally:
        if launcher_here:
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def launched_rank_argv(argv: list[str], environ=os.environ) -> list[str]:
    """The command line a process Lightning launched (LOCAL_RANK > 0) should run: rank 0's job, as a single run.

    Lightning re-runs the script with the launching command line plus `hydra.run.dir=...`; under
    `-m` that replays the whole sweep (into a second folder, with jobs that wait on ranks that
    never come). Here it becomes: the job's own overrides, its output folder as run dir, no config
    copy (rank 0 wrote it). Anything else (rank 0 itself, torchrun, SLURM) keeps `argv` as is.
    """
    job = environ.get(JOB_ENV)
    if not job or environ.get("LOCAL_RANK", "0") == "0":
        return argv
    job = json.loads(job)
    keep = []  # config location flags (-cp/-cd DIR, --config-path=DIR), as given
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg in _CONFIG_FLAGS and i + 1 < len(argv):
            keep += argv[i : i + 2]
            i += 1
        elif arg.split("=", 1)[0] in _CONFIG_FLAGS:
            keep.append(arg)
        i += 1
    return [
        argv[0],
        *keep,
        f"--config-name={job['config_name']}",
        *job["overrides"],
        f"hydra.run.dir={_quoted(job['output_dir'])}",
        "hydra.output_subdir=null",
        f"hydra.job.name=train_ddp_process_{environ['LOCAL_RANK']}",
    ]


def _quoted(value: str) -> str:
    """A Hydra override value that stays one string (output folders contain '=' and ',')."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


# ---------------------------------------------------------------- metrics
def total_grad_norm(parameters) -> torch.Tensor | None:
    """L2 norm of all gradients together (None if there are none): with FSDP2 the sharded gradients' global norm."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return None
    norm = torch.nn.utils.get_total_norm(grads, norm_type=2.0)
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm  # a DTensor under FSDP2
