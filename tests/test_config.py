"""Every option of every config group composes, passes the checks and instantiates into a runnable
(module, datamodule, trainer). Options are found on disk, so a new conf/<group>/<option>.yaml is covered
without touching this file."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from grpo.checks import check_config
from grpo.module import GRPOModule
from grpo.pipeline import build
from grpo_testkit import CONF_DIR, GSM8K_FIXTURE, compose_config

OPTIONS = sorted((d.name, f.stem) for d in CONF_DIR.iterdir() if d.is_dir() for f in d.glob("*.yaml"))
ONE_PROCESS_STRATEGIES = {"auto"}  # multi-process strategies are launched by their own tests: here they only compose
# Settings that make an option's own start-up work (e.g. training an initial reward model) take seconds;
# applied only where the composed config has the key.
CHEAP = {
    "reward.initial_prompts": 4,
    "reward.samples_per_prompt": 2,
    "reward.initial_steps": 2,
    "reward.batch_size": 4,
    "reward.max_new_tokens": 8,
}


def extra_overrides(group: str, option: str, saved_model) -> list[str]:
    """What an option needs to be runnable here: a local model for model=hf, the fixture file for task=gsm8k."""
    hf = ["model=hf", f"model.name_or_path={saved_model}"]
    if (group, option) == ("model", "hf"):
        return hf[1:]
    if (group, option) == ("task", "gsm8k"):
        return [f"task.train_path={GSM8K_FIXTURE}"] + hf  # the tiny model would warm-start on it first
    if (group, option) == ("task", "dataset"):
        return [f"task.path={GSM8K_FIXTURE}"] + hf
    if (group, option) == ("task", "custom"):
        return ["task._target_=grpo.tasks.arithmetic.ArithmeticTask", "+task.train_size=200", "+task.heldout_size=20", "warmstart.steps=2"]
    if (group, option) == ("task", "arithmetic_tools"):  # alone: the baseline without calls (with calls it needs tools=calculator)
        return ["task.tool_share=0"]
    if (group, option) == ("prompt", "chat"):  # a tokenizer with a chat template: the demo parts' BPE one
        from grpo.models.demo_parts import write_demo_parts

        parts = write_demo_parts(Path(saved_model).parent / "chat_parts", train_size=60, test_size=10, num_ops=1)
        return ["model=hf", f"model.name_or_path={parts / 'model'}"]
    return []


def test_options_are_found():
    groups = {g for g, _ in OPTIONS}
    assert {"model", "task", "supervision", "kl", "optimizer", "lr_scheduler", "strategy", "trainer"} <= groups
    assert ("model", "hf") in OPTIONS and ("task", "gsm8k") in OPTIONS and ("kl", "k3") in OPTIONS


def test_every_group_is_in_the_defaults_list():
    defaults = OmegaConf.load(CONF_DIR / "train.yaml").defaults
    listed = {next(iter(d)) for d in defaults if not isinstance(d, str)}
    assert {g for g, _ in OPTIONS} <= listed


def compose_option(group, option, base_overrides, saved_model, cache, output_dir):
    extra = extra_overrides(group, option, saved_model)
    # model=hf: no tiny-model settings
    base = [] if "model=hf" in extra or (group, option) == ("model", "hf") else base_overrides
    overrides = base + [f"{group}={option}"] + extra
    cfg = compose_config(overrides, output_dir=output_dir)
    # every cache goes to the session's tmp cache, never to the repository's outputs/
    more = [f"{k}.cache_dir={cache}" for k in cfg if k != "hydra" and OmegaConf.is_dict(cfg[k]) and "cache_dir" in cfg[k]]
    more += [f"{k}={v}" for k, v in CHEAP.items() if OmegaConf.select(cfg, k, default=None) is not None]
    more = [o for o in more if o not in overrides]
    return compose_config(overrides + more, output_dir=output_dir) if more else cfg


@pytest.mark.parametrize("group, option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_composes_and_instantiates(group, option, base_overrides, warm_cache, saved_tiny_model, tmp_path):
    cfg = compose_option(group, option, base_overrides, saved_tiny_model, warm_cache, tmp_path)
    assert cfg.hydra.runtime.choices[group] == option
    check_config(cfg)
    plain = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    OmegaConf.to_container(plain, resolve=True, throw_on_missing=True)  # every interpolation resolves, nothing ??? left

    # optimizer and scheduler are partials: they instantiate on any parameter list
    param = torch.nn.Parameter(torch.ones(3))
    optimizer = instantiate(cfg.optimizer)([param])
    scheduler = instantiate(cfg.lr_scheduler)(optimizer) if cfg.get("lr_scheduler") else None
    param.grad = torch.ones(3)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    assert not torch.equal(param.detach(), torch.ones(3))

    if group == "strategy" and option not in ONE_PROCESS_STRATEGIES:
        return

    module, datamodule, trainer = build(cfg)
    assert isinstance(module, GRPOModule) and isinstance(datamodule, L.LightningDataModule)
    assert isinstance(trainer, L.Trainer)
    assert trainer.max_epochs == cfg.grpo.steps
    assert module.task is datamodule.task
    opt = module.configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, dict) else opt
    trainable = sum(p.numel() for p in module.policy.parameters() if p.requires_grad)
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == trainable  # the optimizer sees what trains
    if (group, option) == ("adapter", "lora"):  # only the adapters
        assert 0 < trainable < sum(p.numel() for p in module.policy.parameters()) // 2
    assert (module.reference is None) == (cfg.grpo.beta == 0)


def test_debug_composes_with_every_model(saved_tiny_model, tmp_path):
    cfg = compose_config(["debug=default", "model=hf", f"model.name_or_path={saved_tiny_model}"], output_dir=tmp_path)
    build(cfg)


VARIANTS = {  # what each variant=<name> must set (the rest stays the default), for the comparison to compare what it says
    "grpo": {"grpo.aggregation": "sequence", "grpo.beta": 0.04, "loss._target_": "grpo.algo.loss.GRPOLoss"},
    "dapo": {"grpo.aggregation": "token", "grpo.epsilon_high": 0.28, "grpo.beta": 0.0, "grpo.dynamic_sampling.enabled": True},
    "dr_grpo": {"grpo.aggregation": "constant", "grpo.scale_rewards": False},
    "gspo": {"grpo.ratio_level": "sequence", "grpo.epsilon": 3e-4, "grpo.epsilon_high": 4e-4},
    "cispo": {"loss._target_": "grpo.algo.cispo.CISPOLoss", "grpo.aggregation": "token"},
    "sapo": {"loss._target_": "grpo.algo.sapo.SAPOLoss"},
    "gmpo": {"loss._target_": "grpo.algo.gmpo.GMPOLoss"},
    "kl_cov": {"loss._target_": "grpo.algo.cov.KLCovLoss"},
    "top_entropy": {"loss._target_": "grpo.algo.entropy.EntropyControlledLoss", "loss.top_entropy_quantile": 0.2},
    "rloo": {"advantage._target_": "grpo.algo.rloo.RLOOAdvantages", "grpo.scale_rewards": False},
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variant_sets_its_objective(variant, tmp_path):
    assert {f.stem for f in (CONF_DIR / "variant").glob("*.yaml")} == set(VARIANTS)
    cfg = compose_config([f"variant={variant}", "grpo.mu=2"], output_dir=tmp_path)  # a command-line value still wins
    for key, want in VARIANTS[variant].items():
        assert OmegaConf.select(cfg, key) == want, (variant, key)
    assert cfg.grpo.mu == 2


@pytest.mark.parametrize("overrides, want", [
    ([], True),                                                      # the verifier: the paper's group std
    (["reward=model"], "batch"),                                     # a learned reward: the batch's std
    (["reward=prm_verifier"], "batch"),
    (["reward=math", "+reward@reward.components.model.fn=model"], "batch"),  # a learned component among rule rewards
    (["reward=model", "grpo.scale_rewards=true"], True),             # a command-line value still wins
    (["reward=model", "variant=dr_grpo"], False),                    # and so does a variant that sets it
])
def test_a_learned_reward_scales_by_the_batch_std(overrides, want, tmp_path):
    assert compose_config(overrides, output_dir=tmp_path).grpo.scale_rewards == want
