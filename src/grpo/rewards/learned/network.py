"""A reward model: a transformers model with a scalar head on every token (or an implicit PRM, implicit.py).

`AutoModelForTokenClassification` with `num_labels=1` gives one logit per token; the reward is
sigmoid(logit), a probability of "right", read where the labels live:

- ORM: at the completion's last token (the whole output is judged there);
- PRM: at each reasoning step's last token.

The model sees the prompt and the completion tokenized apart and concatenated (as the policy sees
them at rollout time), right-padded; a completion the policy ended (`RMExample.ended`) is followed by the
tokenizer's EOS, and its final step (the last label, nothing but spaces after it) is read at that EOS: the
model has seen that the completion stopped there (a truncated one shows no EOS). Character indices in the completion map to the first token
whose decoded text reaches past them (the same rule the rollout uses for the policy's tokens).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor
from transformers import AutoModelForCausalLM, AutoModelForTokenClassification, AutoTokenizer

from grpo.models.tiny import TinyArch
from grpo.rewards.learned.data import RMExample
from grpo.rewards.learned.implicit import ImplicitPRM, is_implicit
from grpo.rollout.modes import evaluating
from grpo.rollout.steps import chars_to_tokens, token_ends


def build_reward_model(
    tokenizer,
    name_or_path: str | None = None,
    *,
    init_from=None,
    arch: TinyArch | Mapping | None = None,
    dtype: str = "float32",
    trust_remote_code: bool = False,
    seed: int = 0,
    implicit_beta: float | None = None,
):
    """A scalar-head model: from `name_or_path` (hub id or directory), else the tiny built-in architecture.

    `init_from`: a causal LM whose backbone weights start the tiny model (the usual practice: a reward
    model starts from the policy); its config then sets the architecture and `arch` is unused.
    implicit_beta: a number makes an implicit PRM instead (grpo.rewards.learned.implicit): the same causal LM
    (the policy's weights with `init_from`, `name_or_path`'s, or `arch` freshly built) and its frozen copy.
    """
    torch_dtype = getattr(torch, dtype)
    if implicit_beta is not None:  # a causal LM and its frozen copy (implicit.py)
        if name_or_path is not None:
            lm = _from_pretrained(AutoModelForCausalLM, name_or_path, "an implicit PRM's language model", "causal LM",
                                  dtype=torch_dtype, trust_remote_code=trust_remote_code)
        else:
            lm = _fresh(AutoModelForCausalLM, _config(tokenizer, init_from, arch), seed)
            if init_from is not None:
                lm.load_state_dict(init_from.state_dict())
        return ImplicitPRM(lm.to(torch_dtype), beta=implicit_beta)
    if name_or_path is not None:
        return _from_pretrained(AutoModelForTokenClassification, name_or_path, "a reward model", "model", num_labels=1,
                                dtype=torch_dtype, trust_remote_code=trust_remote_code)
    config = _config(tokenizer, init_from, arch)
    config.num_labels = 1
    model = _fresh(AutoModelForTokenClassification, config, seed)
    if init_from is not None:
        model.base_model.load_state_dict(init_from.base_model.state_dict())
    return model.to(torch_dtype)


def _from_pretrained(auto_class, name_or_path: str, what: str, kind: str, **kwargs):
    try:
        return auto_class.from_pretrained(name_or_path, **kwargs)
    except (OSError, ValueError) as err:
        raise ValueError(
            f"Could not load {what} from reward.name_or_path={name_or_path!r}: it is neither a local directory holding "
            f"a transformers {kind} nor a hub id that can be reached from here. ({err})"
        ) from err


def _config(tokenizer, init_from, arch):
    """init_from's config (a copy), else the tiny architecture `arch` over the tokenizer's vocabulary."""
    if init_from is not None:
        return init_from.config.__class__.from_dict(init_from.config.to_dict())
    return TinyArch.from_node(arch, where="reward.arch").config(tokenizer)


def _fresh(auto_class, config, seed: int):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return auto_class.from_config(config)


def load_reward_model(path: str):
    """(model, tokenizer) saved by `save_pretrained` under `path` (a scalar-head model or an implicit PRM)."""
    model = ImplicitPRM.from_pretrained(path) if is_implicit(path) else AutoModelForTokenClassification.from_pretrained(path)
    return model, AutoTokenizer.from_pretrained(path)


def _target_tokens(ends: list[int], char_indices: list[int]) -> list[int]:
    """The token each label at a char index sits on (`chars_to_tokens`); -1 (the prompt's last token) for -1 or
    an empty completion; the last token for an index past the text."""
    tokens = chars_to_tokens(ends, char_indices)
    return [-1 if c < 0 or not ends else len(ends) - 1 if t is None else t for c, t in zip(char_indices, tokens)]


def encode(tokenizer, examples: list[RMExample]) -> dict[str, Tensor]:
    """Right-padded inputs and the flat list of labelled positions.

    input_ids, attention_mask: [N, L]; rows, positions, labels: [K], one entry per target
    (row of the example, token index in the row, 0/1 label).
    """
    prompts = tokenizer([e.prompt for e in examples], add_special_tokens=False).input_ids
    completions = tokenizer([e.completion for e in examples], add_special_tokens=False).input_ids
    eos = tokenizer.eos_token_id
    shown = [c + [eos] if e.ended and eos is not None else c for e, c in zip(examples, completions)]  # EOS where written
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos or 0)
    width = max(len(p) + len(c) for p, c in zip(prompts, shown))
    input_ids = torch.full((len(examples), width), pad, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    rows, positions, labels = [], [], []
    for i, (example, p, c, row) in enumerate(zip(examples, prompts, completions, shown)):
        input_ids[i, : len(p) + len(row)] = torch.tensor(p + row, dtype=torch.long)
        attention_mask[i, : len(p) + len(row)] = 1
        ends = token_ends(tokenizer, c) if c else []
        chars = [ci for ci, _ in example.targets]
        tokens = _target_tokens(ends, chars)
        if len(row) > len(c):  # ended: the final step is read at the EOS (token len(c))
            last = len(example.completion.rstrip()) - 1
            tokens = [len(c) if ci >= last else t for ci, t in zip(chars, tokens)]
        for (_, label), token in zip(example.targets, tokens):
            rows.append(i)
            positions.append(max(len(p) + token, 0))
            labels.append(label)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "rows": torch.tensor(rows, dtype=torch.long),
        "positions": torch.tensor(positions, dtype=torch.long),
        "labels": torch.tensor(labels, dtype=torch.float32),
    }


def target_logits(model, batch: dict[str, Tensor]) -> Tensor:
    """[K] logits of the reward model at the batch's labelled positions."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[..., 0]  # [N, L]
    return logits[batch["rows"], batch["positions"]].float()


@torch.no_grad()
def score(model, tokenizer, examples: list[RMExample], batch_size: int = 64) -> list[list[float]]:
    """Per example, sigmoid(logit) at each of its targets (labels ignored), in the targets' order."""
    device = next(model.parameters()).device
    scores: list[list[float]] = []
    with evaluating(model):
        for start in range(0, len(examples), batch_size):
            chunk = examples[start : start + batch_size]
            batch = {k: v.to(device) for k, v in encode(tokenizer, chunk).items()}
            probs = torch.sigmoid(target_logits(model, batch)).cpu().tolist()
            offset = 0
            for example in chunk:
                scores.append(probs[offset : offset + len(example.targets)])
                offset += len(example.targets)
    return scores
