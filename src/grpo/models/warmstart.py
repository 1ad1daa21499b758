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


def encode_sft(tokenizer, pairs: list[tuple[str, str]], result_spans=None) -> tuple[Tensor, Tensor, Tensor]:
    """(prompt, completion) pairs -> input_ids, attention_mask, labels, each [N, L], right-padded.

    labels are -100 off the completion, so only the completion's tokens are learned.

    Prompt and completion are tokenized apart, so the completion's tokens are exactly what the
    policy emits after the prompt at rollout time; EOS closes each completion.

    `result_spans` (a call format's: completion -> [start, end) character spans of tool results): each result
    is tokenized apart, as the rollout engine appends it, and its tokens are context (labels -100): the warm
    start learns to write the calls, never the tools' results. None: no tool results.
    """
    prompts = tokenizer([p for p, _ in pairs], add_special_tokens=False).input_ids
    if result_spans is None:
        completions = tokenizer([c for _, c in pairs], add_special_tokens=False).input_ids
        learned = completions
    else:
        encoded = [_with_results(tokenizer, c, result_spans(c)) for _, c in pairs]
        completions, learned = [ids for ids, _ in encoded], [labels for _, labels in encoded]
    rows = [p + c + [tokenizer.eos_token_id] for p, c in zip(prompts, completions)]
    width = max(map(len, rows))
    input_ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, (p, row) in enumerate(zip(prompts, rows)):
        input_ids[i, : len(row)] = torch.tensor(row)
        attention_mask[i, : len(row)] = 1
        labels[i, len(p) : len(row)] = torch.tensor(learned[i] + [tokenizer.eos_token_id])
    return input_ids, attention_mask, labels


def sft_tensors(tokenizer, task, n: int, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """`encode_sft` of `n` of the task's worked solutions; the results of tool calls in them (`task.call_format`)
    masked out of the labels."""
    call_format = getattr(task, "call_format", None)
    return encode_sft(tokenizer, task.sft_examples(n, seed), call_format.result_spans if call_format is not None else None)


def _with_results(tokenizer, completion: str, spans: list[tuple[int, int]]) -> tuple[list[int], list[int]]:
    """(token ids, labels) of `completion`: the policy's text and each tool result tokenized apart, in order;
    labels -100 on the results' tokens. `spans`: [start, end) of the results, ascending, not overlapping."""
    ids, labels, at = [], [], 0
    for start, end in [*spans, (len(completion), len(completion))]:
        for text, learned in ((completion[at:start], True), (completion[start:end], False)):
            if text:
                piece = tokenizer(text, add_special_tokens=False).input_ids
                ids += piece
                labels += piece if learned else [-100] * len(piece)
        at = end
    return ids, labels


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

    tensors = sft_tensors(tokenizer, task, steps * batch_size, seed)
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
