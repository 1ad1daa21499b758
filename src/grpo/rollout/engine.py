"""Rollout engines: what generates the G samples of each prompt (the `sampling` config group).

An engine holds the sampling settings (written once: the update's log-probs read the engine's
temperature) and is given the current policy weights before each rollout (`load_weights`). The
in-process `KVCacheEngine` decodes with the policy module itself, so loading is free; an engine in
another process (e.g. vLLM) would copy the weights there. Rollouts, held-out evaluation and the
reward model's training data all sample through an engine.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from grpo.rollout.modes import evaluating
from grpo.rollout.sampler import Completions, sample
from grpo.rollout.tool_decode import sample_with_tools


class RolloutEngine(Protocol):
    max_new_tokens: int
    temperature: float
    top_p: float

    def load_weights(self, policy) -> None:
        """Take the policy's current weights (before a rollout)."""

    def generate(self, prompt_ids: Tensor, prompt_mask: Tensor, *, eos_token_id: int, pad_token_id: int,
                 num_samples: int = 1, generator: torch.Generator | None = None, row_seeds: list[int] | None = None,
                 temperature: float | None = None) -> Completions:
        """`num_samples` completions of each left-padded prompt [B, P] -> Completions [B * num_samples, T],
        each prompt's samples contiguous. temperature: None = the engine's; 0 = greedy."""


class KVCacheEngine:
    """The built-in engine: batched KV-cached decoding (`grpo.rollout.sampler.sample`) with the policy itself.

    tools: a `grpo.tools.toolbox.Toolbox` bound to the policy's tokenizer (the `tools` group; the pipeline
    builds and binds it): completions call tools in the middle and resume (`grpo.rollout.tool_decode`).
    None (tools=none): plain sampling.
    """

    def __init__(self, max_new_tokens: int = 48, temperature: float = 1.0, top_p: float = 1.0, tools=None):
        # the values are checked with every other setting, before anything is built (grpo.checks)
        self.max_new_tokens, self.temperature, self.top_p = max_new_tokens, float(temperature), float(top_p)
        if tools is not None and getattr(tools, "tokenizer", None) is None:
            raise ValueError("KVCacheEngine(tools=...): bind the toolbox to the policy's tokenizer first (toolbox.bind(tokenizer))")
        self.tools = tools
        self.model = None

    def load_weights(self, policy) -> None:
        self.model = policy  # the same module: nothing to copy

    @torch.no_grad()
    def generate(self, prompt_ids, prompt_mask, *, eos_token_id, pad_token_id, num_samples=1, generator=None,
                 row_seeds=None, temperature=None) -> Completions:
        if self.model is None:
            raise RuntimeError("KVCacheEngine.generate before load_weights(policy)")
        settings = dict(max_new_tokens=self.max_new_tokens, eos_token_id=eos_token_id, pad_token_id=pad_token_id,
                        temperature=self.temperature if temperature is None else temperature, top_p=self.top_p,
                        generator=generator, num_samples=num_samples, row_seeds=row_seeds)
        with evaluating(self.model):
            if self.tools is not None:
                return sample_with_tools(self.model, prompt_ids, prompt_mask, self.tools, **settings)
            return sample(self.model, prompt_ids, prompt_mask, **settings)


def encode_prompts(tokenizer, problems, device) -> tuple[Tensor, Tensor]:
    """The problems' prompts, left-padded (the tokenizer's padding side): prompt_ids, prompt_mask [B, P] on `device`."""
    enc = tokenizer([p.prompt for p in problems], padding=True, return_tensors="pt", add_special_tokens=False)
    return enc.input_ids.to(device), enc.attention_mask.to(device)


def sample_problems(engine: RolloutEngine, tokenizer, problems, *, device, num_samples: int = 1, **kwargs):
    """(prompt_ids, prompt_mask [B, P] on `device`, Completions [B * num_samples, T]) for `problems`; kwargs:
    generator, row_seeds, temperature (see `RolloutEngine.generate`)."""
    prompt_ids, prompt_mask = encode_prompts(tokenizer, problems, device)
    out = engine.generate(prompt_ids, prompt_mask, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                          num_samples=num_samples, **kwargs)
    return prompt_ids, prompt_mask, out


def sample_texts(engine: RolloutEngine, tokenizer, problems, *, device, num_samples: int = 1, **kwargs) -> list[str]:
    """Decoded completions of `sample_problems` (special tokens stripped), each problem's samples contiguous."""
    _, _, out = sample_problems(engine, tokenizer, problems, device=device, num_samples=num_samples, **kwargs)
    return tokenizer.batch_decode(out.ids.cpu(), skip_special_tokens=True)
