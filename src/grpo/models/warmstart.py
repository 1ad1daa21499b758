"""Supervised warm start: teach a freshly built model the task's worked-solution format.

The built-in task's solutions are deliberately imperfect (see `ArithmeticTask.sft_examples`), so the
warm-started policy is right some of the time, far from always: the starting point GRPO needs.
Trained with a Lightning Trainer (progress bar, TensorBoard curve) and cached with save_pretrained.
"""

from __future__ import annotations

import math

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset


def encode_sft(tokenizer, pairs: list[tuple[str, str]]) -> tuple[Tensor, Tensor, Tensor]:
    """(prompt, completion) pairs -> input_ids, attention_mask, labels, each [N, L], right-padded.

    labels are -100 off the completion, so only the completion's tokens are learned.

    Prompt and completion are tokenized apart, so the completion's tokens are exactly what the
    policy emits after the prompt at rollout time; EOS closes each completion.
    """
    prompts = tokenizer([p for p, _ in pairs], add_special_tokens=False).input_ids
    completions = tokenizer([c for _, c in pairs], add_special_tokens=False).input_ids
    rows = [p + c + [tokenizer.eos_token_id] for p, c in zip(prompts, completions)]
    width = max(map(len, rows))
    input_ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, (p, row) in enumerate(zip(prompts, rows)):
        input_ids[i, : len(row)] = torch.tensor(row)
        attention_mask[i, : len(row)] = 1
        labels[i, len(p) : len(row)] = torch.tensor(row[len(p) :])
    return input_ids, attention_mask, labels


class SFTModule(L.LightningModule):
    """Next-token cross-entropy on completion tokens; AdamW with linear warm-up then cosine decay."""

    def __init__(self, model, lr: float, total_steps: int, warmup_steps: int = 50):
        super().__init__()
        self.model, self.lr, self.total_steps, self.warmup_steps = model, lr, total_steps, warmup_steps

    def training_step(self, batch, batch_idx):
        input_ids, attention_mask, labels = batch
        loss = self.model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
        self.log("sft/loss", loss)
        return loss

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.model.parameters(), lr=self.lr, weight_decay=0.0)

        def schedule(step: int) -> float:
            if step < self.warmup_steps:
                return (step + 1) / self.warmup_steps
            progress = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def train_warm_start(model, tokenizer, task, *, steps: int, batch_size: int, lr: float, seed: int, log_dir: str) -> None:
    """Supervised training of `model` on `steps * batch_size` of the task's worked solutions, in place."""
    from lightning.pytorch.loggers import TensorBoardLogger

    tensors = encode_sft(tokenizer, task.sft_examples(steps * batch_size, seed))
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(TensorDataset(*tensors), batch_size=batch_size, shuffle=True, generator=generator)
    from grpo.progress import StepProgressBar

    trainer = L.Trainer(
        max_steps=steps,
        callbacks=[StepProgressBar(unit="warm-start step", count="batches", log_every=max(1, steps // 10))],
        accelerator="cpu" if not torch.cuda.is_available() else "auto",
        devices=1,
        logger=TensorBoardLogger(log_dir, name="warmstart"),
        enable_checkpointing=False,
        enable_model_summary=False,
        log_every_n_steps=10,
    )
    trainer.fit(SFTModule(model, lr=lr, total_steps=steps, warmup_steps=min(50, max(1, steps // 10))), loader)
