"""Reward-model training: binary cross-entropy on the labelled positions; accuracy and AUROC.

One loop (`train_reward_model`) trains the initial reward model before the GRPO run and retrains it
inside the run (rm_schedule=iterative). Under a multi-process strategy every rank calls it with the
same examples and the same seed: each global batch is split across the ranks and the gradients are
averaged (all-reduce), so the ranks' reward models stay identical replicas (the reward model is
never sharded: it is not part of the LightningModule). Metrics are computed locally: the ranks
evaluate identical models on the same examples.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchmetrics import MeanMetric
from torchmetrics.classification import BinaryAccuracy, BinaryAUROC

from grpo.rewards.learned.data import RMExample
from grpo.rewards.learned.network import encode, target_logits
from grpo.rollout.modes import evaluating


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_gather_objects(obj) -> list:
    """[obj of rank 0, obj of rank 1, ...] on every rank ([obj] in a single process)."""
    if not _distributed():
        return [obj]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


@torch.no_grad()
def evaluate_reward_model(model, tokenizer, examples: list[RMExample], batch_size: int = 64) -> dict[str, float]:
    """accuracy (threshold 0.5 on sigmoid(score)), auroc (nan when the labels hold one class only) and
    positive_rate (the base rate accuracy is to be read against) over all labelled positions of `examples`.
    A soft label (a share of right Monte-Carlo continuations) counts as positive when above 0 (the hard label)."""
    device = next(model.parameters()).device
    accuracy, auroc, positive = (m.to(device) for m in (BinaryAccuracy(sync_on_compute=False), BinaryAUROC(sync_on_compute=False), MeanMetric(sync_on_compute=False)))
    with evaluating(model):
        for start in range(0, len(examples), batch_size):
            batch = {k: v.to(device) for k, v in encode(tokenizer, examples[start : start + batch_size]).items()}
            probs, labels = torch.sigmoid(target_logits(model, batch)), (batch["labels"] > 0).long()
            accuracy.update(probs, labels)
            auroc.update(probs, labels)
            positive.update(labels.float())
    rate = float(positive.compute()) if positive.update_count else math.nan
    return {
        "accuracy": float(accuracy.compute()) if accuracy.update_count else math.nan,
        "auroc": float(auroc.compute()) if 0.0 < rate < 1.0 else math.nan,
        "positive_rate": rate,
    }


def train_reward_model(
    model,
    tokenizer,
    train: list[RMExample],
    heldout: list[RMExample] | None = None,
    *,
    steps: int,
    batch_size: int = 32,
    lr: float = 1e-4,
    seed: int = 0,
    drop_last: bool = True,
    progress: bool = True,
    desc: str = "Reward model",
    on_step: Callable[[int, float], None] | None = None,
) -> dict[str, float]:
    """Train `model` in place for `steps` AdamW steps (gradient norm clipped at 1) on `train`; held-out metrics after.

    Data order and dropout are seeded by `seed` (the global RNG is left as it was), so a run resumed
    from a checkpoint retrains exactly as the uninterrupted one did. drop_last: leave out each pass's
    last, smaller batch. on_step(step, loss): called after each optimizer step (1, 2, ..., steps) with that
    batch's loss (scripts/prm_curve.py evaluates the model there).
    """
    if steps > 0 and train:
        generator = torch.Generator().manual_seed(seed)
        device = next(model.parameters()).device
        fork_devices = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=fork_devices):  # dropout seeded, the caller's RNG untouched
            torch.manual_seed(seed)
            loader = DataLoader(train, batch_size=min(batch_size, len(train)), shuffle=True, generator=generator,
                                collate_fn=list, drop_last=drop_last)
            _fit(model, tokenizer, loader, steps, lr, device, progress, desc, on_step)
    return evaluate_reward_model(model, tokenizer, heldout) if heldout else {}


def _fit(model, tokenizer, loader: DataLoader, steps: int, lr: float, device, progress: bool, desc: str, on_step=None) -> None:
    """`steps` optimizer steps; data parallel over the ranks when torch.distributed is initialised."""
    from tqdm.auto import tqdm

    rank, world = (dist.get_rank(), dist.get_world_size()) if _distributed() else (0, 1)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    was_training = model.training
    model.train()
    bar = tqdm(total=steps, desc=desc, unit="step", disable=not progress or rank != 0, leave=False)
    step = 0
    while step < steps:
        for examples in loader:  # the global batch: the same on every rank
            batch = encode(tokenizer, examples[rank::world] or examples[:1])  # (a batch smaller than the world: repeats)
            batch = {k: v.to(device) for k, v in batch.items()}
            loss = F.binary_cross_entropy_with_logits(target_logits(model, batch), batch["labels"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if world > 1:
                for p in params:
                    if p.grad is None:
                        p.grad = torch.zeros_like(p)
                    dist.all_reduce(p.grad)
                    p.grad /= world
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if on_step is not None:
                on_step(step, loss.item())
            if step == steps:
                break
    bar.close()
    model.train(was_training)
