"""Settings checked before anything runs, each failure saying what to change."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from grpo.algo.kl import KL_ESTIMATORS
from grpo.algo.loss import AGGREGATIONS, RATIO_LEVELS

SUPERVISIONS = ("outcome", "process")


class ConfigError(ValueError):
    """A setting that cannot work; the message says which one and how to fix it."""


def check_config(cfg: DictConfig) -> None:
    g = cfg.grpo
    problems = [
        f"{key} is required: set it on the command line, e.g. {key}=<value>"
        for key in sorted(OmegaConf.missing_keys(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])))
    ]
    if g.group_size < 2:
        problems.append(f"grpo.group_size={g.group_size}: a group needs at least 2 outputs to have a baseline; use e.g. grpo.group_size=8")
    if g.prompts_per_step < 1:
        problems.append(f"grpo.prompts_per_step={g.prompts_per_step}: needs at least 1 question per step")
    mb = g.minibatch_prompts
    if mb is not None and (mb < 1 or g.prompts_per_step % mb != 0):
        problems.append(
            f"grpo.minibatch_prompts={mb} does not divide grpo.prompts_per_step={g.prompts_per_step}: mini-batches hold whole "
            f"groups, so pick a divisor (e.g. grpo.minibatch_prompts={_divisor_hint(g.prompts_per_step)}) or null for the whole rollout"
        )
    if g.mu < 1:
        problems.append(f"grpo.mu={g.mu}: needs at least 1 policy update per rollout")
    if g.kl_estimator not in KL_ESTIMATORS:
        problems.append(f"grpo.kl_estimator={g.kl_estimator!r} is not known; choose kl=k1, kl=k2 or kl=k3")
    if g.aggregation not in AGGREGATIONS:
        problems.append(f"grpo.aggregation={g.aggregation!r} is not known; choose one of {', '.join(AGGREGATIONS)}")
    if g.ratio_level not in RATIO_LEVELS:
        problems.append(f"grpo.ratio_level={g.ratio_level!r} is not known; choose one of {', '.join(RATIO_LEVELS)}")
    if g.supervision not in SUPERVISIONS:
        problems.append(f"grpo.supervision={g.supervision!r} is not known; choose supervision=outcome or supervision=process")
    if g.beta < 0:
        problems.append(f"grpo.beta={g.beta}: the KL weight must be >= 0")
    if not 0 < g.epsilon < 1 or (g.epsilon_high is not None and g.epsilon_high <= 0):
        problems.append(f"grpo.epsilon={g.epsilon}, grpo.epsilon_high={g.epsilon_high}: clip ranges must be in (0, 1) (high side > 0)")
    if g.steps < 1:
        problems.append(f"grpo.steps={g.steps}: needs at least 1 GRPO step")
    if cfg.sampling.temperature <= 0:
        problems.append(f"sampling.temperature={cfg.sampling.temperature}: rollouts must sample; use a value > 0 (e.g. 1.0)")
    if not 0 < cfg.sampling.top_p <= 1:
        problems.append(f"sampling.top_p={cfg.sampling.top_p}: must be in (0, 1]")
    if cfg.eval.k_prompts > cfg.eval.prompts:
        problems.append(f"eval.k_prompts={cfg.eval.k_prompts} exceeds eval.prompts={cfg.eval.prompts}; lower it")
    if problems:
        raise ConfigError("Invalid settings:\n  - " + "\n  - ".join(problems))


def _divisor_hint(n: int) -> int:
    return max(d for d in range(1, n) if n % d == 0) if n > 1 else 1
