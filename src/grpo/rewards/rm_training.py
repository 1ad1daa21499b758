"""Reward-model training: binary cross-entropy on the labelled positions, held-out accuracy and AUROC.

`RewardModelModule` is the LightningModule. `train_reward_model` runs it for a number of steps in
one of two ways, with the same loss, optimizer and metrics:

- `use_trainer=True`: a Lightning Trainer with a progress bar and a TensorBoard curve (the initial
  reward model, trained before the GRPO run starts);
- `use_trainer=False`: a plain loop with a tqdm bar on the module's own methods. The iterative
  schedule retrains inside the GRPO run's `fit`, where a second Trainer would fight the first one
  over the progress display, the process group and the global state. Under a multi-process strategy
  every rank calls it with the same examples and the same seed: each global batch is split across
  the ranks and the gradients are averaged (all-reduce), so the ranks' reward models stay identical
  replicas (the reward model is never sharded: it is not part of the LightningModule).

Metrics are computed locally (`sync_on_compute=False`): the ranks evaluate identical models on the
same examples.
"""

from __future__ import annotations

import math
from functools import partial

import lightning as L
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchmetrics import MeanMetric
from torchmetrics.classification import BinaryAccuracy, BinaryAUROC

from grpo.rewards.reward_model import encode, target_logits
from grpo.rewards.rm_data import RMExample
from grpo.rollout.collect import evaluating


class RewardModelModule(L.LightningModule):
    """BCE between sigmoid(score) and the verifier's 0/1 label at each labelled token."""

    def __init__(self, model, lr: float = 1e-4, weight_decay: float = 0.0, warmup_steps: int = 0):
        super().__init__()
        self.model, self.lr, self.weight_decay, self.warmup_steps = model, lr, weight_decay, warmup_steps
        self.accuracy = BinaryAccuracy(sync_on_compute=False)  # threshold 0.5 on sigmoid(score)
        self.auroc = BinaryAUROC(sync_on_compute=False)
        self.positive_rate = MeanMetric(sync_on_compute=False)  # the base rate accuracy is to be read against

    def loss(self, batch) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(target_logits(self.model, batch), batch["labels"])

    def training_step(self, batch, batch_idx):
        loss = self.loss(batch)
        self.log("rm/train_loss", loss, prog_bar=True, batch_size=len(batch["labels"]))
        return loss

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        warmup = max(self.warmup_steps, 1)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ---- held-out metrics
    @torch.no_grad()
    def update_metrics(self, batch) -> None:
        probs = torch.sigmoid(target_logits(self.model, batch))
        labels = batch["labels"]
        self.accuracy.update(probs, labels.long())
        self.auroc.update(probs, labels.long())
        self.positive_rate.update(labels)

    def compute_metrics(self) -> dict[str, float]:
        """accuracy, auroc (nan when the labels hold one class only), positive_rate; resets the states."""
        rate = float(self.positive_rate.compute()) if self.positive_rate.update_count else math.nan
        metrics = {
            "accuracy": float(self.accuracy.compute()) if self.accuracy.update_count else math.nan,
            "auroc": float(self.auroc.compute()) if 0.0 < rate < 1.0 else math.nan,
            "positive_rate": rate,
        }
        for metric in (self.accuracy, self.auroc, self.positive_rate):
            metric.reset()
        return metrics

    def validation_step(self, batch, batch_idx):
        self.update_metrics(batch)

    def on_validation_epoch_end(self) -> None:
        self.log_dict({f"rm/heldout_{k}": v for k, v in self.compute_metrics().items()})


def _loader(tokenizer, examples, batch_size: int, shuffle: bool = False, generator=None) -> DataLoader:
    return DataLoader(
        examples, batch_size=batch_size, shuffle=shuffle, generator=generator, collate_fn=partial(encode, tokenizer), drop_last=False
    )


def evaluate_reward_model(model, tokenizer, examples: list[RMExample], batch_size: int = 64) -> dict[str, float]:
    """accuracy / auroc / positive_rate of `model` on `examples` (over all their labelled positions)."""
    module = RewardModelModule(model)
    device = next(model.parameters()).device
    module.to(device)
    with evaluating(model):
        for batch in _loader(tokenizer, examples, batch_size):
            module.update_metrics({k: v.to(device) for k, v in batch.items()})
    return module.compute_metrics()


def train_reward_model(
    model,
    tokenizer,
    train: list[RMExample],
    heldout: list[RMExample] | None = None,
    *,
    steps: int,
    batch_size: int = 32,
    lr: float = 1e-4,
    weight_decay: float = 0.0,
    warmup_steps: int = 0,
    seed: int = 0,
    use_trainer: bool = False,
    log_dir: str | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """Train `model` in place for `steps` optimizer steps on `train`; held-out metrics after (empty if none).

    Data order and dropout are seeded by `seed` (the global RNG is left as it was), so a run resumed
    from a checkpoint retrains exactly as the uninterrupted one did.
    """
    if steps > 0 and train:
        module = RewardModelModule(model, lr=lr, weight_decay=weight_decay, warmup_steps=warmup_steps)
        generator = torch.Generator().manual_seed(seed)
        device = next(model.parameters()).device
        fork_devices = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=fork_devices):  # dropout seeded, the caller's RNG untouched
            torch.manual_seed(seed)
            if use_trainer:
                _fit_with_trainer(module, _loader(tokenizer, train, batch_size, True, generator), steps, log_dir)
            else:
                loader = DataLoader(train, batch_size=min(batch_size, len(train)), shuffle=True, generator=generator, collate_fn=list, drop_last=True)
                _fit_plain(module, tokenizer, loader, steps, device, progress)
    return evaluate_reward_model(model, tokenizer, heldout) if heldout else {}


def _fit_with_trainer(module: RewardModelModule, loader: DataLoader, steps: int, log_dir: str | None) -> None:
    from lightning.pytorch.loggers import TensorBoardLogger

    trainer = L.Trainer(
        max_steps=steps,
        accelerator="cpu" if not torch.cuda.is_available() else "auto",
        devices=1,
        logger=TensorBoardLogger(log_dir, name="reward_model") if log_dir else False,
        enable_checkpointing=False,
        enable_model_summary=False,
        log_every_n_steps=10,
        gradient_clip_val=1.0,  # as the plain loop
    )
    trainer.fit(module, loader)


def _fit_plain(module: RewardModelModule, tokenizer, loader: DataLoader, steps: int, device, progress: bool) -> None:
    """`steps` optimizer steps; data parallel over the ranks when torch.distributed is initialised."""
    from tqdm.auto import tqdm

    model = module.model
    rank, world = (dist.get_rank(), dist.get_world_size()) if _distributed() else (0, 1)
    opt = module.configure_optimizers()
    optimizer, scheduler = opt["optimizer"], opt["lr_scheduler"]["scheduler"]
    params = [p for p in model.parameters() if p.requires_grad]
    was_training = model.training
    model.train()
    bar = tqdm(total=steps, desc="Reward model", unit="step", disable=not progress or rank != 0, leave=False)
    step = 0
    while step < steps:
        for examples in loader:  # the global batch: the same on every rank
            batch = encode(tokenizer, examples[rank::world] or examples[:1])  # (a batch smaller than the world: repeats)
            loss = module.loss({k: v.to(device) for k, v in batch.items()})
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
            scheduler.step()
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if step == steps:
                break
    bar.close()
    model.train(was_training)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
