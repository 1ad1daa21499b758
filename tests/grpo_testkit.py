"""Helpers shared by the tests (importable as `grpo_testkit`: tests/conftest.py puts tests/ on sys.path).

- `compose_config`: the run config exactly as `python train.py ...` composes it (Hydra compose API),
  with `output_dir` pointed where the test says (never into the repository).
- `tiny_lm`: a small randomly initialised Llama-shaped model with the char tokenizer, in milliseconds.
- `DigitShareReward`: a reward source whose rewards differ inside almost every group even for an
  untrained policy, so that a 2-step smoke run really updates the parameters.
- `read_scalars`: TensorBoard scalars of a run, {tag: [(step, value), ...]}.
"""

from __future__ import annotations

from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from grpo.models.tiny import TinyArch, build_tiny_model
from grpo.models.tokenizer import build_char_tokenizer
from grpo.rewards.verifier import VerifierReward
from grpo.tasks import ArithmeticTask

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = REPO / "conf"
FIXTURES = REPO / "tests" / "fixtures"


def load_script(name: str):
    """scripts/<name>.py as a module (the scripts are not a package), for tests that call its functions."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"{name}_script", REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
GSM8K_FIXTURE = FIXTURES / "gsm8k_tiny.jsonl"
ARITHMETIC_ALPHABET = ArithmeticTask.alphabet


def compose_config(overrides=(), output_dir: str | Path | None = None) -> DictConfig:
    """conf/train.yaml composed with `overrides`; `output_dir` replaces ${hydra:runtime.output_dir}."""
    overrides = list(overrides)
    if output_dir is not None:
        overrides.append(f"output_dir={output_dir}")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)  # ${hydra:...} interpolations resolve as under @hydra.main
    return cfg


def tiny_lm(alphabet: str = ARITHMETIC_ALPHABET, seed: int = 0, init_std: float = 0.2, dtype=torch.float32, **arch):
    """(model in eval mode, char tokenizer): a ~20k-parameter random Llama, fast enough for unit tests.

    init_std 0.2 (transformers' default is 0.02) makes the next-token distribution depend on the context
    and peaked enough that greedy decoding emits EOS after a few tokens on some prompts and not on others.
    """
    tokenizer = build_char_tokenizer(alphabet)
    kwargs = dict(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_position_embeddings=128)
    kwargs.update(arch)
    config = TinyArch(**kwargs).config(tokenizer)
    config.initializer_range = init_std
    model = build_tiny_model(config, seed=seed).to(dtype).eval()
    return model, tokenizer


class DigitShareReward(VerifierReward):
    """Outcome reward = share of digits in the completion: almost never equal across a group.

    Stands in for the verifier in smoke runs (rewards that vary inside every group whatever
    the policy, so a smoke run's update never depends on the warm start's accuracy).
    """

    def outcome(self, problems, completions):
        return torch.tensor([sum(c.isdigit() for c in text) / max(len(text), 1) for text in completions])


def online_mc_prm_overrides(cache: str | Path) -> list[str]:
    """A debug run's settings for a tiny PRM on MC labels, retrained online after every step (add debug=default)."""
    return ["eval.every_n_steps=100", "eval.prompts=4", "eval.k_prompts=2", "reward=model", "supervision=process_min",
            "step_labels=mc", "rm_schedule=online", "reward.initial_prompts=4", "reward.samples_per_prompt=2",
            "reward.initial_steps=2", "reward.batch_size=4", f"reward.cache_dir={cache}", "rm_schedule.rm_steps=2",
            "rm_schedule.eval_samples=4", "rm_schedule.steps_per_iteration=1"]


def read_scalars(log_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """All scalar series of the TensorBoard event files under `log_dir`."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def cpu_bf16_attention_error() -> str | None:
    """Why torch's CPU bfloat16 attention cannot run on this kernel path, or None when it can.

    torch 2.13's CPU flash-attention kernel for bfloat16 with a mask needs AVX-512 instructions: forced onto a lower
    path (ATEN_CPU_CAPABILITY=avx2 on an AVX-512 CPU) it raises "pack_vnni2 is only supported when avx512 is
    supported". A limitation of torch, not of this code: bf16 tests skip with this reason there."""
    if torch.cuda.is_available():
        return None
    q = torch.randn(1, 2, 64, 16, dtype=torch.bfloat16, requires_grad=True)
    mask = torch.ones(1, 1, 64, 64, dtype=torch.bool).tril()
    try:
        torch.nn.functional.scaled_dot_product_attention(q, q, q, attn_mask=mask).float().sum().backward()
    except RuntimeError as err:
        return f"torch's CPU bfloat16 attention fails on this kernel path: {err}"
    return None
