"""Compose the run from the config: task, policy, reward, rollout, loss, module, data, trainer; fit; export."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.core.saving import save_hparams_to_yaml
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from omegaconf import DictConfig, OmegaConf

import grpo.quiet  # noqa: F401  (third-party tips and deprecation warnings)
from grpo.checks import ConfigError, check_checkpoint, check_config
from grpo.rewards.base import supervise
from grpo.tasks.prompts import FormattedTask, tool_schemas
from grpo.strategies.weights import export_pretrained

log = logging.getLogger(__name__)


def instantiate_clearly(node, **kwargs):
    """hydra.utils.instantiate, re-raising a component's own error (e.g. a missing data file) as itself."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        if isinstance(err.__cause__, (FileNotFoundError, ValueError)):
            raise err.__cause__ from None
        raise


def replaced_task_target() -> str | None:
    """The class an override gave task._target_ over a built-in task option (any option but task=custom), or None.

    Such a class would receive that option's settings (task=arithmetic's num_ops_min, ...) as its arguments:
    a class that takes them (**kwargs, or a subclass) would run with settings meant for another task.
    """
    if not HydraConfig.initialized():  # composed without Hydra's runtime (a script): the choice is unknown
        return None
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.runtime.choices.get("task") in (None, "custom"):
        return None
    for override in hydra_cfg.overrides.task:
        key, _, value = override.partition("=")
        if key.lstrip("+~") == "task._target_":
            return value
    return None


def instantiate_task(node):
    """The task. A class given by task._target_ over a built-in task option (task=arithmetic, or the
    task=arithmetic_debug that debug=default chooses, ...) gets an error saying to start from task=custom,
    whether or not the class would take that option's settings."""
    target = replaced_task_target()
    if target is not None:
        option = HydraConfig.get().runtime.choices.get("task")
        settings = ", ".join(str(k) for k in node if k != "_target_")
        raise ConfigError(
            f"task._target_={target} replaces the class of task={option}, whose settings ({settings}) are still there. "
            "Start from the empty one, e.g. python train.py task=custom "
            f"task._target_={target} +task.<argument>=<value>"
        )
    try:
        return instantiate_clearly(node)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, TypeError) and "unexpected keyword argument" in str(cause):
            raise ConfigError(
                f"task._target_={node.get('_target_')} does not take a setting it was given ({cause}). The settings of "
                "another task option are still there: start from the empty one, e.g. python train.py task=custom "
                f"task._target_={node.get('_target_')} +task.<argument>=<value>"
            ) from None
        raise


def warm_start_key(cfg: DictConfig) -> str:
    """What a warm start learns from (the task's settings, the prompt format and, when set, the tools: they change the
    chat prompt's tool list and the worked solutions' calls): part of its cache key. tools=none adds nothing, so the
    keys of runs without tools are what they were."""
    tools = OmegaConf.to_yaml(cfg.tools) if cfg.get("tools") and cfg.tools.get("_target_") else ""
    return OmegaConf.to_yaml(cfg.task) + OmegaConf.to_yaml(cfg.prompt) + tools


def formatted_task(task, prompt, source, toolbox=None):
    """The task as the policy sees it: its problems rendered by the prompt format, bound to the source's tokenizer
    (with the tools' schemas, when their calls use the chat template's own format: grpo.tasks.prompts.tool_schemas)."""
    schemas, tokenizer = tool_schemas(toolbox), source.tokenizer(task)
    return FormattedTask(task, prompt.bind(tokenizer, tools=schemas) if schemas else prompt.bind(tokenizer))


def instantiate_toolbox(cfg: DictConfig):
    """The `tools` group's Toolbox, or None for tools=none (an empty node)."""
    return instantiate_clearly(cfg.tools) if cfg.get("tools") and cfg.tools.get("_target_") else None


def load_policy(cfg: DictConfig):
    """(task as the policy sees it, policy, tokenizer) as `build` gets them, the same warm-start cache entry
    included: for scripts that need the policy without the training module (scripts/mc_labels.py, bench.py)."""
    source = instantiate_clearly(cfg.model)
    task = formatted_task(instantiate_task(cfg.task), instantiate_clearly(cfg.prompt), source, instantiate_toolbox(cfg))
    policy, tokenizer = source.load(task, task_key=warm_start_key(cfg))
    return task, policy, tokenizer


def build(cfg: DictConfig):
    """(module, datamodule, trainer) for `cfg`; raises ConfigError on settings that cannot work.

    Every component is constructed (and so checks its own settings) before the policy is loaded, which
    may mean minutes of warm start: a bad setting fails in a second. The task is seen through the prompt
    format (grpo.tasks.prompts.FormattedTask), bound to the policy's tokenizer.
    """
    check_config(cfg)
    L.seed_everything(cfg.seed, workers=True)
    task = instantiate_task(cfg.task)
    prompt = instantiate_clearly(cfg.prompt)
    # what the advantage estimator wants (step rewards or one per output) decides a learned reward's kind (PRM / ORM)
    reward_source = supervise(instantiate_clearly(cfg.reward), instantiate_clearly(cfg.advantage).needs_step_rewards)
    loss = instantiate_clearly(cfg.loss)
    toolbox = instantiate_toolbox(cfg)
    written = getattr(task, "call_format", None)  # how the task's worked solutions write calls (the warm start's habit)
    if toolbox is not None and written is not None and type(toolbox.format) is not type(written):
        raise ConfigError(f"task {cfg.task._target_} writes its calls as {type(written).__name__}, but the toolbox reads "
                          f"{type(toolbox.format).__name__}: "
                          "no call would ever close. Use the toolbox made for the task (tools=calculator for "
                          "task=arithmetic_tools), or a task without calls in its solutions")
    callbacks = [instantiate_clearly(c) for c in cfg.callbacks.values()] if cfg.get("callbacks") else []
    if cfg.trainer.get("enable_progress_bar") is False:  # the user turned the bar off: ours too
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    if cfg.rm_schedule.get("_target_"):  # static: nothing; iterative: Algorithm 1's outer loop, a Callback
        callbacks.append(instantiate_clearly(cfg.rm_schedule))
    source = instantiate_clearly(cfg.model)
    task = formatted_task(task, prompt, source, toolbox)  # the problems as the policy sees them (chat: the tools listed)
    datamodule = instantiate_clearly(cfg.data, task=task)
    policy, tokenizer = source.load(task, task_key=warm_start_key(cfg))
    lora = instantiate_clearly(cfg.adapter) if cfg.get("adapter") and cfg.adapter.get("_target_") else None
    if lora is not None:  # LoRA: adapters injected, the rest frozen; pi_ref = the policy with them off
        policy = lora.apply(policy)
    reward = reward_source.bind(task, policy=policy, tokenizer=tokenizer)
    tools = {"engine": engine_with_tools(cfg, toolbox, tokenizer)} if toolbox is not None else {}  # tools=none: as configured
    rollout = instantiate_clearly(cfg.rollout, reward=reward, task=task, tokenizer=tokenizer, **tools)
    module = instantiate_clearly(
        cfg.module,
        policy=policy,
        tokenizer=tokenizer,
        task=task,
        rollout=rollout,
        loss=loss,
        optimizer=instantiate(cfg.optimizer),
        lr_scheduler=instantiate(cfg.lr_scheduler),
        lora=lora,
    )
    trainer = instantiate(cfg.trainer, logger=instantiate(cfg.logger), callbacks=callbacks)
    return module, datamodule, trainer


def engine_with_tools(cfg: DictConfig, toolbox, tokenizer):
    """The `sampling` group's engine given the toolbox (tools=calculator|python) bound to the policy's tokenizer, so
    rollouts, held-out evaluation and everything else sampled through the module's engine call tools."""
    try:
        return instantiate_clearly(cfg.sampling, tools=toolbox.bind(tokenizer))
    except InstantiationException as err:
        if isinstance(err.__cause__, TypeError) and "tools" in str(err.__cause__):
            raise ConfigError(f"sampling._target_={cfg.sampling.get('_target_')} takes no toolbox: use sampling=kv_cache "
                              "with tools=calculator|python, or tools=none") from None
        raise


def evaluate(trainer, module, datamodule) -> dict[str, float]:
    """Held-out evaluation of the current policy: {"val/accuracy": ..., "val/pass@k": ..., "val/maj@k": ...}."""
    trainer.validate(module, datamodule=datamodule, verbose=False)
    return {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}


def run(cfg: DictConfig) -> float:
    ckpt_path = cfg.get("ckpt_path")
    check_checkpoint(ckpt_path)  # before anything is built: a missing, foreign or truncated file
    module, datamodule, trainer = build(cfg)
    before = None
    if not ckpt_path:
        before = evaluate(trainer, module, datamodule)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    if module.validated_at == trainer.global_step:  # the fit's last evaluation came after its last update
        after = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    else:
        after = evaluate(trainer, module, datamodule)

    metrics = {f"final/{k.split('/', 1)[1]}": v for k, v in after.items()}
    if before is not None:
        metrics.update({f"initial/{k.split('/', 1)[1]}": v for k, v in before.items()})
    export_dir = Path(cfg.output_dir) / "export"
    export_pretrained(module.policy, module.tokenizer, export_dir, trainer.is_global_zero, lora=module.lora)  # every rank
    if trainer.is_global_zero:
        write_final(trainer, _flat_hparams(cfg), metrics)
        lines = [f"{name:>24}: {value:.4f}" for name, value in sorted(metrics.items())]
        print("\nHeld-out results (greedy accuracy; pass@k / maj@k over k samples):\n" + "\n".join(lines))
        print(f"Policy exported to {export_dir} (transformers save_pretrained)")
    return float(after["val/accuracy"])


def write_final(trainer, hparams: dict, metrics: dict[str, float]) -> None:
    """The settings and the before/after figures, to every logger, flushed to disk.

    fit/validate have already finalized (closed) the loggers: what is logged now goes to a new event
    file, which only another finalize flushes and closes (otherwise it is lost at exit, or in a sweep).
    """
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(hparams, metrics)  # the HPARAMS tab: settings + metrics (also as scalars)
        else:
            logger.log_hyperparams(hparams)
            logger.log_metrics(metrics)
        logger.finalize("success")
        if isinstance(logger, TensorBoardLogger):  # its save() never replaces the hparams.yaml ({}) the first finalize wrote
            save_hparams_to_yaml(str(Path(logger.log_dir) / logger.NAME_HPARAMS_FILE), logger.hparams)
        if isinstance(logger, WandbLogger):  # finalize leaves its run open: close it (the next job of a sweep starts its own)
            logger.experiment.finish()


CHOICES = ("model", "adapter", "task", "prompt", "supervision", "loss", "kl", "rollout_correction", "reward", "step_labels", "steps", "rm_schedule", "sampling", "tools", "strategy")


def _flat_hparams(cfg: DictConfig) -> dict:
    """The settings a sweep varies, flat (`grpo.group_size`: 8), for TensorBoard's HPARAMS tab and tb/hparams.yaml.

    Values stay as configured (None, lists included): hparams.yaml keeps them as YAML, and the logger turns
    what TensorBoard cannot show into strings.
    """
    keep = {k: cfg[k] for k in ("grpo", "sampling", "optimizer", "seed") if k in cfg}
    flat = {}

    def walk(prefix, node):
        for key, value in node.items():
            name = f"{prefix}{key}"
            if isinstance(value, dict):
                walk(name + ".", value)
            elif not str(key).startswith("_"):
                flat[name] = value

    walk("", OmegaConf.to_container(DictConfig(keep), resolve=True))
    if HydraConfig.initialized():  # the config groups' options: choice.supervision=process, choice.kl=k3, ...
        choices = HydraConfig.get().runtime.choices
        flat.update({f"choice.{group}": choices[group] for group in CHOICES if choices.get(group) is not None})
    return flat
