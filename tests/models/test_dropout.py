"""Dropout is off in the policy unless a setting keeps it (grpo.models.dropout, model.disable_dropout): with it off,
train mode (the update) computes what eval mode (sampling, old and reference log-probs) computes; LoRA's own
dropout (adapter.dropout > 0) still acts in the update."""

from __future__ import annotations

import pytest
import torch

from grpo.models.adapters import LoRA
from grpo.models.dropout import disable_dropout
from grpo.models.sources import PretrainedPolicy
from grpo_testkit import tiny_lm

IDS = torch.randint(4, 20, (3, 12), generator=torch.Generator().manual_seed(0))


def train_mode_logits(model, seed):
    model.train()
    torch.manual_seed(seed)  # dropout's draw
    with torch.no_grad():
        return model(input_ids=IDS).logits


@pytest.fixture
def saved_with_dropout(tmp_path):
    """A saved model whose config asks for attention dropout 0.5 (as some hub models ship with dropout)."""
    model, tokenizer = tiny_lm(seed=2)
    model.config.attention_dropout = 0.5
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    return tmp_path


@pytest.mark.parametrize("disable", [True, False])
def test_model_disable_dropout_decides_whether_the_update_sees_dropout(saved_with_dropout, disable):
    policy, _ = PretrainedPolicy(str(saved_with_dropout), disable_dropout=disable).load(task=None)
    a, b = train_mode_logits(policy, 1), train_mode_logits(policy, 2)
    policy.eval()
    with torch.no_grad():
        evaluated = policy(input_ids=IDS).logits
    if disable:  # train mode (the update) = eval mode (sampling, pi_old, pi_ref), draw after draw
        torch.testing.assert_close(a, evaluated)
        torch.testing.assert_close(b, evaluated)
        assert policy.config.attention_dropout == 0.0 and policy.model.layers[0].self_attn.attention_dropout == 0.0
    else:  # the model's own dropout acts in train mode
        assert not torch.allclose(a, b)
        assert policy.model.layers[0].self_attn.attention_dropout == 0.5


def test_dropout_modules_and_config_settings_are_zeroed():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.3))
    model.attention_dropout, model.resid_pdrop, model.hidden_size = 0.1, 0.2, 4.0  # floats a model reads at call time
    disable_dropout(model)
    assert model[1].p == 0.0 and model.attention_dropout == 0.0 and model.resid_pdrop == 0.0
    assert model.hidden_size == 4.0  # not a dropout setting


def test_lora_dropout_still_acts_in_the_update():
    policy = LoRA(r=4, alpha=8, dropout=0.5).apply(disable_dropout(tiny_lm(seed=1)[0]))
    for name, p in policy.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p)  # a trained adapter (B = 0 at the start: dropout on its input would not show)
    assert not torch.allclose(train_mode_logits(policy, 1), train_mode_logits(policy, 2))
