"""A tiny causal LM built from a transformers config (Llama or Qwen2 architecture), no download.

`TinyArch` is the one description of its shape: conf/model/tiny.yaml's `arch` node builds it for the
policy, and conf/reward/model.yaml's `arch` (the policy's node by default) for a reward model that
does not start from the policy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields

from transformers import AutoModelForCausalLM, LlamaConfig, PretrainedConfig, PreTrainedTokenizerBase, Qwen2Config

ARCHITECTURES = {"llama": LlamaConfig, "qwen2": Qwen2Config}


@dataclass(frozen=True)
class TinyArch:
    family: str = "llama"  # llama | qwen2
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 512
    max_position_embeddings: int = 256

    def __post_init__(self):
        if self.family not in ARCHITECTURES:
            raise ValueError(f"arch.family={self.family!r} is not known; choose one of {sorted(ARCHITECTURES)}")

    @classmethod
    def from_node(cls, node: "TinyArch | Mapping | None", where: str = "model.arch") -> "TinyArch":
        """A TinyArch from a config node (a mapping of its fields; None: the defaults)."""
        if node is None or isinstance(node, TinyArch):
            return node or cls()
        if not isinstance(node, Mapping):
            raise ValueError(f"{where} must be a mapping of {[f.name for f in fields(cls)]}, got {node!r}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(node) - known)
        if unknown:
            raise ValueError(f"{where} has no setting {unknown}; its settings are {sorted(known)}")
        return cls(**dict(node))

    def as_dict(self) -> dict:
        return asdict(self)

    def config(self, tokenizer: PreTrainedTokenizerBase) -> PretrainedConfig:
        """A config for this decoder-only LM whose vocabulary is the tokenizer's (tied embeddings)."""
        return ARCHITECTURES[self.family](
            vocab_size=len(tokenizer),
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            num_key_value_heads=self.num_heads,
            max_position_embeddings=self.max_position_embeddings,
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
