"""Settings checked before anything runs, each failure saying what to change."""

from __future__ import annotations

import zipfile
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from grpo.algo.advantages import SCALES
from grpo.algo.aggregation import AGGREGATIONS
from grpo.algo.loss import RATIO_LEVELS
from grpo.rewards.combine import WeightedRewards
from grpo.rollout.group import INVALID_REWARD


class ConfigError(ValueError):
    """A setting that cannot work; the message says which one and how to fix it."""


def _number(problems: list, key: str, value, kind=int, low=None, example=None) -> bool:
    """True if `value` is a `kind` (int, or float: int or float) >= low; else a problem is recorded."""
    ok_type = (isinstance(value, int) or (kind is float and isinstance(value, float))) and not isinstance(value, bool)
    if not ok_type:
        what = "an integer" if kind is int else "a number"
        problems.append(f"{key}={value!r} must be {what}" + (f", e.g. {key}={example}" if example is not None else ""))
        return False
    if low is not None and value < low:
        problems.append(f"{key}={value}: must be at least {low}" + (f", e.g. {key}={example}" if example is not None else ""))
        return False
    return True


def check_config(cfg: DictConfig) -> None:
    problems = [
        f"{key} is required: set it on the command line, e.g. {key}=<value>"
        for key in sorted(OmegaConf.missing_keys(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])))
    ]
    if problems:  # the other checks read these values
        raise ConfigError("Invalid settings:\n  - " + "\n  - ".join(problems))
    g = cfg.grpo
    if _number(problems, "grpo.group_size", g.group_size, example=8) and g.group_size < 2:
        problems.append(f"grpo.group_size={g.group_size}: a group needs at least 2 outputs to have a baseline; use e.g. grpo.group_size=8")
    pps_ok = _number(problems, "grpo.prompts_per_step", g.prompts_per_step, low=1, example=16)
    update_key, update_groups, update_ok = "grpo.prompts_per_step", g.prompts_per_step, pps_ok  # the groups an update plan covers
    ds = g.get("dynamic_sampling") or {}
    if not isinstance(ds.get("enabled", False), bool):
        problems.append(f"grpo.dynamic_sampling.enabled={ds.get('enabled')!r} must be true or false")
    extra_ok = _number(problems, "grpo.dynamic_sampling.max_extra_batches", ds.get("max_extra_batches", 0), low=0, example=4)
    if ds.get("groups") is not None and _number(problems, "grpo.dynamic_sampling.groups", ds.groups, low=1, example="null") \
            and ds.get("enabled") is True:
        update_key, update_groups, update_ok = "grpo.dynamic_sampling.groups", ds.groups, True
        if pps_ok and extra_ok and ds.groups > g.prompts_per_step * (1 + ds.max_extra_batches):
            problems.append(
                f"grpo.dynamic_sampling.groups={ds.groups} can never be filled: at most grpo.prompts_per_step x (1 + "
                f"grpo.dynamic_sampling.max_extra_batches) = {g.prompts_per_step * (1 + ds.max_extra_batches)} groups are drawn; "
                "raise max_extra_batches or lower groups"
            )
    mb = g.minibatch_prompts
    if mb is not None and _number(problems, "grpo.minibatch_prompts", mb, example="null") and update_ok and (mb < 1 or update_groups % mb != 0):
        problems.append(
            f"grpo.minibatch_prompts={mb} does not divide {update_key}={update_groups}: mini-batches hold whole "
            f"groups, so pick a divisor (e.g. grpo.minibatch_prompts={_divisor_hint(update_groups)}) or null for the whole rollout"
        )
    scale = g.get("scale_rewards", True)
    if not (isinstance(scale, bool) or scale in SCALES):
        problems.append(f"grpo.scale_rewards={scale!r} is not known; choose true (= group), batch or false (= none)")
    for key in ("mask_truncated", "eos_credit"):
        if not isinstance(g.get(key, False), bool):
            problems.append(f"grpo.{key}={g[key]!r} must be true or false")
    _number(problems, "grpo.mu", g.mu, low=1, example=1)
    _number(problems, "grpo.steps", g.steps, low=1, example=200)
    if g.aggregation not in AGGREGATIONS:
        problems.append(f"grpo.aggregation={g.aggregation!r} is not known; choose one of {', '.join(AGGREGATIONS)}")
    if g.ratio_level not in RATIO_LEVELS:
        problems.append(f"grpo.ratio_level={g.ratio_level!r} is not known; choose one of {', '.join(RATIO_LEVELS)}")
    if _number(problems, "grpo.beta", g.beta, kind=float, example=0.04) and g.beta < 0:
        problems.append(f"grpo.beta={g.beta}: the KL weight must be >= 0")
    eps_ok = g.epsilon is None or _number(problems, "grpo.epsilon", g.epsilon, kind=float, example=0.2)  # None: loss=cispo's
    high_ok = g.epsilon_high is None or _number(problems, "grpo.epsilon_high", g.epsilon_high, kind=float, example=0.28)
    if eps_ok and high_ok and ((g.epsilon is not None and not 0 < g.epsilon < 1) or (g.epsilon_high is not None and g.epsilon_high <= 0)):
        problems.append(f"grpo.epsilon={g.epsilon}, grpo.epsilon_high={g.epsilon_high}: clip ranges must be in (0, 1) (high side > 0)")
    s = cfg.sampling
    _number(problems, "sampling.max_new_tokens", s.max_new_tokens, low=1, example=48)
    if _number(problems, "sampling.temperature", s.temperature, kind=float, example=1.0) and s.temperature <= 0:
        problems.append(f"sampling.temperature={s.temperature}: rollouts must sample; use a value > 0 (e.g. 1.0)")
    if _number(problems, "sampling.top_p", s.top_p, kind=float, example=1.0) and not 0 < s.top_p <= 1:
        problems.append(f"sampling.top_p={s.top_p}: must be in (0, 1]")
    e = cfg.eval
    prompts_ok = _number(problems, "eval.prompts", e.prompts, low=1, example=1000)
    k_ok = _number(problems, "eval.k_prompts", e.k_prompts, low=0, example=200) and _number(problems, "eval.k", e.k, low=0, example=8)
    _number(problems, "eval.batch_size", e.batch_size, low=1, example=250)
    _number(problems, "eval.every_n_steps", e.every_n_steps, low=1, example=50)
    if prompts_ok and k_ok and e.k > 0 and e.k_prompts > e.prompts:  # k = 0: no k-sample evaluation
        problems.append(f"eval.k_prompts={e.k_prompts} exceeds eval.prompts={e.prompts}; lower it")
    invalid = cfg.rollout.get("invalid_reward")
    if invalid not in INVALID_REWARD:
        problems.append(f"rollout.invalid_reward={invalid!r} is not known; choose error (stop at a bad reward) or zero (count it as 0)")
    reward = cfg.get("reward")
    weighted = f"{WeightedRewards.__module__}.{WeightedRewards.__qualname__}"
    if OmegaConf.is_dict(reward) and "components" in reward and reward.get("_target_") != weighted:
        problems.append(f"reward.components is given, but reward {reward.get('_target_')} is a single reward without components; "
                        "choose a weighted one: reward=weighted (the verifier plus yours), reward=math or reward=gsm8k")
    tools, share = cfg.get("tools"), cfg.task.get("tool_share", 0)
    if share and not (OmegaConf.is_dict(tools) and tools.get("_target_")):  # the warm start writes calls nothing answers
        problems.append(f"task.tool_share={share}: the warm start teaches the policy to call the calculator, but tools=none "
                        "answers no call; use tools=calculator, or task.tool_share=0 for the same task without tools")
    if problems:
        raise ConfigError("Invalid settings:\n  - " + "\n  - ".join(problems))


def check_checkpoint(ckpt_path) -> None:
    """A resume path that exists and holds a checkpoint: a file torch.save wrote (a zip archive), or a folder of
    per-rank shards (fsdp, deepspeed). Raises FileNotFoundError / ConfigError naming the path otherwise."""
    if not ckpt_path:
        return
    path = Path(ckpt_path)
    if not path.exists():
        raise FileNotFoundError(f"ckpt_path={ckpt_path} does not exist; point it at a checkpoint, e.g. outputs/runs/<run>/checkpoints/last.ckpt")
    if path.is_file() and not zipfile.is_zipfile(path):
        raise ConfigError(
            f"ckpt_path={ckpt_path} is not a checkpoint this project wrote (not a torch.save archive: a different file, "
            "or one cut short, e.g. by a full disk or an interrupted copy); pick another file under <run>/checkpoints/"
        )


def _divisor_hint(n: int) -> int:
    return max(d for d in range(1, n) if n % d == 0) if n > 1 else 1
