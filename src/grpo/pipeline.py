"""Compose the run from the config: task, policy, reward, module, data, trainer; fit; export."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import lightning as L
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from grpo.checks import check_config
from grpo.distributed import export_pretrained

log = logging.getLogger(__name__)
# The frozen reference (and reward) models are in eval mode on purpose.
warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")


def instantiate_clearly(node, **kwargs):
    """hydra.utils.instantiate, re-raising a component's own error (e.g. a missing data file) as itself."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        if isinstance(err.__cause__, (FileNotFoundError, ValueError)):
            raise err.__cause__ from None
        raise


def build(cfg: DictConfig):
    """(module, datamodule, trainer) for `cfg`; raises ConfigError on settings that cannot work."""
    check_config(cfg)
    L.seed_everything(cfg.seed, workers=True)
    task = instantiate_clearly(cfg.task)
    policy, tokenizer = instantiate_clearly(cfg.model).load(task, task_key=OmegaConf.to_yaml(cfg.task))
    reward = instantiate(cfg.reward).bind(task, policy=policy, tokenizer=tokenizer)
    module = instantiate(
        cfg.module,
        policy=policy,
        tokenizer=tokenizer,
        reward=reward,
        task=task,
        optimizer=instantiate(cfg.optimizer),
        lr_scheduler=instantiate(cfg.lr_scheduler),
    )
    datamodule = instantiate(cfg.data, task=task)
    callbacks = [instantiate(c) for c in cfg.callbacks.values()] if cfg.get("callbacks") else []
    if cfg.rm_schedule.get("_target_"):  # static: nothing; iterative: Algorithm 1's outer loop, a Callback
        callbacks.append(instantiate(cfg.rm_schedule))
    trainer = instantiate(cfg.trainer, logger=instantiate(cfg.logger), callbacks=callbacks)
    return module, datamodule, trainer


def run(cfg: DictConfig) -> float:
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path and not Path(ckpt_path).exists():  # a file, or a folder of shards (fsdp, deepspeed)
        raise FileNotFoundError(f"ckpt_path={ckpt_path} does not exist; point it at a checkpoint, e.g. outputs/runs/<run>/checkpoints/last.ckpt")
    module, datamodule, trainer = build(cfg)
    before = None
    if not ckpt_path:
        before = trainer.validate(module, datamodule=datamodule, verbose=False)[0]
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    if module.validated_at == trainer.global_step:  # the fit's last evaluation came after its last update
        after = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    else:
        after = trainer.validate(module, datamodule=datamodule, verbose=False)[0]

    metrics = {f"final/{k.split('/', 1)[1]}": v for k, v in after.items()}
    if before is not None:
        metrics.update({f"initial/{k.split('/', 1)[1]}": v for k, v in before.items()})
    export_dir = Path(cfg.output_dir) / "export"
    export_pretrained(module.policy, module.tokenizer, export_dir, trainer.is_global_zero)  # every rank: gathers shards
    if trainer.is_global_zero:
        if trainer.logger is not None:
            trainer.logger.log_hyperparams(_flat_hparams(cfg), metrics)
        lines = [f"{name:>24}: {value:.4f}" for name, value in sorted(metrics.items())]
        print("\nHeld-out results (greedy accuracy; pass@k / maj@k over k samples):\n" + "\n".join(lines))
        print(f"Policy exported to {export_dir} (transformers save_pretrained)")
    return float(after["val/accuracy"])


def _flat_hparams(cfg: DictConfig) -> dict:
    """The settings a sweep varies, flat, for TensorBoard's HPARAMS tab."""
    keep = {k: cfg[k] for k in ("grpo", "sampling", "optimizer", "seed") if k in cfg}
    flat = {}

    def walk(prefix, node):
        for key, value in node.items():
            name = f"{prefix}{key}"
            if isinstance(value, dict):
                walk(name + ".", value)
            elif not str(key).startswith("_"):
                flat[name] = value if isinstance(value, (int, float, str, bool)) else str(value)

    walk("", OmegaConf.to_container(DictConfig(keep), resolve=True))
    return flat
