"""A tiny causal LM built from a transformers config (Llama or Qwen2 architecture), no download."""

from __future__ import annotations

from transformers import AutoModelForCausalLM, LlamaConfig, PretrainedConfig, PreTrainedTokenizerBase, Qwen2Config

ARCHITECTURES = {"llama": LlamaConfig, "qwen2": Qwen2Config}


def tiny_config(
    tokenizer: PreTrainedTokenizerBase,
    arch: str = "llama",
    hidden_size: int = 128,
    num_layers: int = 4,
    num_heads: int = 4,
    intermediate_size: int = 512,
    max_position_embeddings: int = 256,
) -> PretrainedConfig:
    """A config for a small decoder-only LM whose vocabulary is the tokenizer's (tied embeddings)."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"model.arch={arch!r} is not known; choose one of {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[arch](
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )


def build_tiny_model(config: PretrainedConfig, seed: int = 0):
    """A freshly initialised model for `config`, seeded so that every rank builds the same weights."""
    import torch

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return AutoModelForCausalLM.from_config(config)
