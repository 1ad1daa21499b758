"""TinyArch: the one description of the built-in architecture, shared by the policy and the reward model."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from grpo.models.tiny import TinyArch
from grpo.models.tokenizer import build_char_tokenizer
from grpo.rewards.learned.network import build_reward_model
from grpo_testkit import compose_config

SMALL = dict(family="qwen2", hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_position_embeddings=96)


def test_config_follows_every_field():
    tokenizer = build_char_tokenizer("0123456789+-*=;:AQ")
    config = TinyArch(**SMALL).config(tokenizer)
    assert config.model_type == "qwen2" and config.vocab_size == len(tokenizer)
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (32, 2, 2)
    assert (config.intermediate_size, config.max_position_embeddings) == (64, 96)
    assert config.tie_word_embeddings and config.eos_token_id == tokenizer.eos_token_id


def test_from_node_accepts_a_config_node_and_rejects_unknown_settings():
    assert TinyArch.from_node(OmegaConf.create(SMALL)) == TinyArch(**SMALL)
    assert TinyArch.from_node(None) == TinyArch()
    with pytest.raises(ValueError, match=r"model\.arch has no setting \['hidden'\]"):
        TinyArch.from_node({"hidden": 32})
    with pytest.raises(ValueError, match=r"arch\.family='gpt9' is not known; choose one of \['llama', 'qwen2'\]"):
        TinyArch(family="gpt9")


def test_reward_model_arch_defaults_to_the_policy_node():
    cfg = compose_config(["reward=model", "model.arch.hidden_size=64", "model.arch.family=qwen2"])
    assert TinyArch.from_node(cfg.reward.arch) == TinyArch.from_node(cfg.model.arch)
    assert TinyArch.from_node(cfg.reward.arch).hidden_size == 64
    tokenizer = build_char_tokenizer("0123456789")
    model = build_reward_model(tokenizer, arch=cfg.reward.arch)  # init_from_policy=false takes this path
    assert model.config.model_type == "qwen2" and model.config.hidden_size == 64 and model.config.num_labels == 1
    hf = compose_config(["reward=model", "model=hf", "model.name_or_path=some/dir"])
    assert all(v is None for v in hf.reward.arch.values())  # no policy arch node: TinyArch's defaults
