"""RolloutDataModule: which questions each GRPO step samples, and the held-out problems.

One epoch is one GRPO step. `train_dataloader` runs once per epoch
(Trainer(reload_dataloaders_every_n_epochs=1)) and serves the step's policy updates, mu passes of
mini-batches of whole groups: item k is this rank's questions of the step (`StepQuestions`), with
the update's index and the groups it trains on. The groups themselves are sampled, scored and turned
into advantages by the LightningModule's rollout at the step's first update (GRPOModule). Question
order is a function of (seed, epoch, rank), so a resumed run replays exactly what it would have done.
"""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from grpo.data.minibatches import minibatch_plan


class StepQuestions:
    """This rank's questions of a GRPO step (`questions`: Problems), served as policy update `update` of `updates`.

    groups: [minibatch groups] long, sorted: the questions (= groups) this update trains on.
    A plain object, not a collection, so Lightning and every strategy pass it to the module as it is
    (nothing in it is moved or converted; the rollout tokenizes the questions onto the device).
    """

    def __init__(self, questions, update: int, updates: int, groups: Tensor):
        self.questions, self.update, self.updates, self.groups = list(questions), update, updates, groups


def as_is(item):
    """DataLoader collate for items that are already batches (no stacking, no conversion)."""
    return item


class RolloutDataModule(L.LightningDataModule):
    def __init__(
        self,
        task,
        *,
        prompts_per_step: int,
        minibatch_prompts: int | None = None,
        mu: int = 1,
        val_prompts: int = 1000,
        val_batch_size: int = 250,
        seed: int = 0,
    ):
        super().__init__()
        self.task = task
        self.prompts_per_step, self.mu = prompts_per_step, mu
        self.minibatch_prompts = minibatch_prompts or prompts_per_step
        self.val_prompts, self.val_batch_size, self.seed = val_prompts, val_batch_size, seed

    # ---- which questions
    def setup(self, stage: str | None = None) -> None:
        if not hasattr(self, "train_pool"):
            self.train_pool = self.task.train_problems()
            self.heldout = self.task.heldout_problems()[: self.val_prompts]
            if not self.train_pool:
                raise ValueError(f"{type(self.task).__qualname__} has no training problems: check the task's data (e.g. task.train_path)")
            if not self.heldout:
                raise ValueError(
                    f"{type(self.task).__qualname__} has no held-out problems to evaluate on (eval.prompts={self.val_prompts}): "
                    "give the task a held-out split (e.g. task.heldout_path, or a larger file for task.heldout_fraction) and eval.prompts >= 1"
                )

    def _rank_world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def questions(self, epoch: int, rank: int = 0, world: int = 1) -> list:
        """This rank's questions for `epoch`: a slice of one global batch, so ranks never share a question.

        The pool is walked in a seeded permutation, reshuffled each pass over it.
        """
        per_step = self.prompts_per_step * world
        start = epoch * per_step
        picked = []
        for pos in range(start + rank * self.prompts_per_step, start + (rank + 1) * self.prompts_per_step):
            pass_idx, offset = divmod(pos, len(self.train_pool))
            order = self._permutation(pass_idx)
            picked.append(self.train_pool[int(order[offset])])
        return picked

    def _permutation(self, pass_idx: int) -> torch.Tensor:
        cache = getattr(self, "_perm_cache", None)
        if cache is None or cache[0] != pass_idx:
            g = torch.Generator().manual_seed(self.seed * 7919 + pass_idx)
            self._perm_cache = (pass_idx, torch.randperm(len(self.train_pool), generator=g))
        return self._perm_cache[1]

    # ---- the step's policy updates
    def train_dataloader(self) -> DataLoader:
        epoch = self.trainer.current_epoch
        questions = self.questions(epoch, *self._rank_world())
        plan = minibatch_plan(self.prompts_per_step, self.minibatch_prompts, self.mu, seed=self.seed + epoch)
        items = [StepQuestions(questions, k, len(plan), groups) for k, groups in enumerate(plan)]
        return DataLoader(items, batch_size=None, shuffle=False, collate_fn=as_is)

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        return batch  # a step's questions, or held-out (index, Problem) pairs: tokenized onto the device when sampled

    # ---- held-out evaluation
    def val_dataloader(self) -> DataLoader:
        rank, world = self._rank_world()
        items = list(enumerate(self.heldout))[rank::world]  # (global index, problem): sampling is seeded per question
        return DataLoader(items, batch_size=self.val_batch_size, shuffle=False, collate_fn=list)
