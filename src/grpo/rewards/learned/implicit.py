"""An implicit PRM (reward.implicit_beta): the reward model is a causal LM, its score a log-likelihood ratio.

Yuan et al., "Free Process Rewards without Process Labels" (arXiv 2412.01981), used online by PRIME (arXiv
2502.01456): a language model pi_phi beside a frozen copy of where it started, pi_ref, scores token t of a
sequence x (prompt then completion) by

    z_t = beta * sum_{i <= t} log pi_phi(x_i | x_<i) / pi_ref(x_i | x_<i)            (z_0 = 0)

It is read and trained exactly as the scalar-head model is (grpo.rewards.learned.network): sigmoid(z_t) at a
labelled position, binary cross-entropy against the step label, so a step's score is again an estimate of
P(right | prefix), and every credit assignment (sum / min / progress) takes it unchanged. What differs is where the
judgement lives: in the LM's next-token distribution, which already does the arithmetic the policy writes (the
scalar head must learn to redo it from hidden states). A step's own contribution, z at its end minus z at the
previous step's end, is the token-level reward PRIME sums. The sum starts at the prompt's first token, so the
prompt's own ratio is a learned per-question offset (a value baseline; a group shares it).

`forward` returns `.logits` [N, L, 1] like AutoModelForTokenClassification with num_labels=1, so scoring,
evaluation, training and ensembles take it as they take a scalar-head model. pi_ref never trains and stays in
eval mode. `save_pretrained(dir)` writes pi_phi to dir, pi_ref to dir/reference and beta to dir/implicit.json;
`load_reward_model` (network.py) recognises such a directory.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import Tensor, nn

CONFIG = "implicit.json"


def token_logprobs(lm, input_ids: Tensor, attention_mask: Tensor | None) -> Tensor:
    """[N, L-1] log pi(x_t | x_<t) for t = 1..L-1 (float32)."""
    logits = lm(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1].float()  # [N, L-1, V]
    target = logits.gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    return target - torch.logsumexp(logits, dim=-1)


class ImplicitPRM(nn.Module):
    """z_t = beta * cumulative log pi_phi / pi_ref (see the module docstring); `lm` trains, `reference` does not."""

    def __init__(self, lm: nn.Module, reference: nn.Module | None = None, beta: float = 0.05):
        super().__init__()
        self.lm = lm
        self.reference = copy.deepcopy(lm) if reference is None else reference
        self.reference.requires_grad_(False).eval()
        self.beta = checked_beta(beta)

    @property
    def config(self):
        return self.lm.config

    def train(self, mode: bool = True) -> "ImplicitPRM":
        super().train(mode)
        self.reference.eval()  # pi_ref is a fixed function: no dropout, ever
        return self

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> SimpleNamespace:
        logp = token_logprobs(self.lm, input_ids, attention_mask)
        with torch.no_grad():
            ref = token_logprobs(self.reference, input_ids, attention_mask)
        z = self.beta * torch.cumsum(logp - ref, dim=-1)  # [N, L-1]: positions 1..L-1
        return SimpleNamespace(logits=torch.cat([z.new_zeros(z.shape[0], 1), z], dim=1)[..., None])  # [N, L, 1]

    def save_pretrained(self, path) -> None:
        path = Path(path)
        self.lm.save_pretrained(path)
        self.reference.save_pretrained(path / "reference")
        (path / CONFIG).write_text(json.dumps({"beta": self.beta}))

    @classmethod
    def from_pretrained(cls, path) -> "ImplicitPRM":
        from transformers import AutoModelForCausalLM

        path = Path(path)
        beta = json.loads((path / CONFIG).read_text())["beta"]
        return cls(AutoModelForCausalLM.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path / "reference"), beta)


def checked_beta(beta) -> float | None:
    """reward.implicit_beta checked: None (a scalar-head model) or a number > 0."""
    if beta is None:
        return None
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0 < beta < float("inf"):
        raise ValueError(f"reward.implicit_beta={beta!r}: null (a scalar-head reward model) or a number > 0, the implicit "
                         "PRM's scale (e.g. reward.implicit_beta=0.5)")
    return float(beta)


def is_implicit(path) -> bool:
    """Does `path` hold an implicit PRM saved by ImplicitPRM.save_pretrained?"""
    return (Path(path) / CONFIG).is_file()
