"""Evaluation metrics over k sampled answers per question (the paper's Pass@K and Maj@K)."""

from __future__ import annotations

from collections import Counter

import torch
from torch import Tensor


def pass_at_k(correct: Tensor) -> Tensor:
    """correct [P, k] bool -> [P] float: 1 where at least one of the k samples is right."""
    return correct.any(-1).float()


def majority_answer(answers: list[str | None]) -> str | None:
    """Most frequent non-None answer (ties: the one seen first); None if there is none."""
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None
    top = max(counts.values())
    return next(a for a in answers if a is not None and counts[a] == top)


def maj_at_k(answers: list[list[str | None]], truths: list[str]) -> Tensor:
    """answers: P lists of k extracted answers; truths: P answers -> [P] float, 1 where the vote is right."""
    return torch.tensor([float(majority_answer(a) == t) for a, t in zip(answers, truths)])


def total_grad_norm(parameters) -> Tensor | None:
    """L2 norm of all gradients together (None if there are none): with FSDP2 the sharded gradients' global norm."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return None
    norm = torch.nn.utils.get_total_norm(grads, norm_type=2.0)
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm  # a DTensor under FSDP2
