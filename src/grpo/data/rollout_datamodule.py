"""RolloutDataModule: which questions each GRPO step samples, and the held-out problems.

One epoch is one GRPO step. `train_dataloader` runs once per epoch
(Trainer(reload_dataloaders_every_n_epochs=1)) and serves the step's policy updates, mu passes of
mini-batches of whole groups: item k is this rank's questions of the step (`StepQuestions`), with
the update's index and the groups it trains on. The groups themselves are sampled, scored and turned
into advantages by the LightningModule's rollout at the step's first update (GRPOModule). Question
order is a function of (seed, epoch, rank), so a resumed run replays exactly what it would have done.

Dynamic sampling (DAPO, arXiv 2503.14476, Sec 3.2; off by default): the step's questions come with a
`Refill`, up to `max_extra_batches` further batches of `prompts_per_step` questions, which the rollout
draws from while too few of its groups have reward spread; the update then holds `dynamic_groups`
groups (the mini-batch plan is over those). The extra questions are a function of (seed, epoch, rank)
too: a seeded permutation of the training pool per step, sliced by rank and batch (no question on two
ranks; one may repeat a question of the step's first batch).

Prompt curriculum (`curriculum.enabled`, off by default; grpo.data.curriculum): the step's global batch is the
next prompts_per_step x world questions of the same seeded walk that are not resting; the module reports each
group's outcome after the rollout (`StepQuestions.report`) and questions all right (or all wrong) in their last
`window` draws rest for `rest_steps` steps. The walk's position and the pool travel in checkpoints
(`state_dict`), so a resumed run draws what it would have drawn.
"""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from grpo.data.curriculum import DifficultyPool
from grpo.data.minibatches import minibatch_plan

CURRICULUM_KEYS = ("enabled", "window", "rest_steps")


class Refill:
    """Dynamic sampling's question supply for one step on one rank: `batches`, up to max_extra_batches
    further generation batches of questions (drawn in order, only while needed), and `groups`, the
    informative groups the update holds (the mini-batch plan's groups)."""

    def __init__(self, batches: list[list], groups: int):
        self.batches, self.groups = batches, groups


class StepQuestions:
    """This rank's questions of a GRPO step (`questions`: Problems), served as policy update `update` of `updates`.

    groups: [minibatch groups] long, sorted: the groups of the step's rollout this update trains on.
    refill: a `Refill` under dynamic sampling, else None.
    indices, report: under the prompt curriculum, the questions' indices in the training pool and where the module
        reports the groups' outcomes after the rollout (`RolloutDataModule.report`); else None.
    A plain object, not a collection, so Lightning and every strategy pass it to the module as it is
    (nothing in it is moved or converted; the rollout tokenizes the questions onto the device).
    """

    def __init__(self, questions, update: int, updates: int, groups: Tensor, refill: Refill | None = None,
                 indices: list[int] | None = None, report=None):
        self.questions, self.update, self.updates, self.groups = list(questions), update, updates, groups
        self.refill, self.indices, self.report = refill, indices, report


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
        dynamic_sampling: bool = False,
        max_extra_batches: int = 0,
        dynamic_groups: int | None = None,
        curriculum=None,
    ):
        super().__init__()
        self.task = task
        self.prompts_per_step, self.mu = prompts_per_step, mu
        self.dynamic_sampling, self.max_extra_batches = dynamic_sampling, max_extra_batches
        # the groups each step's update holds: prompts_per_step, or dynamic sampling's target
        self.update_groups = (dynamic_groups or prompts_per_step) if dynamic_sampling else prompts_per_step
        self.minibatch_prompts = minibatch_prompts or self.update_groups
        self.val_prompts, self.val_batch_size, self.seed = val_prompts, val_batch_size, seed
        curriculum = dict(curriculum or {})
        unknown = set(curriculum) - set(CURRICULUM_KEYS)
        if unknown:
            raise ValueError(f"data.curriculum has unknown keys {sorted(unknown)}: it takes {list(CURRICULUM_KEYS)}")
        self.pool = DifficultyPool(curriculum.get("window", 2), curriculum.get("rest_steps", 10)) if curriculum.get("enabled") else None
        self._cursor, self._drawn, self._reported = 0, None, -1  # curriculum: next walk position; (epoch, indices); last step reported

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

    def curriculum_indices(self, epoch: int, world: int = 1) -> list[int]:
        """The curriculum's global batch for `epoch`: the next prompts_per_step x world questions (indices into the
        pool) of the walk `questions` takes, passing over resting ones (none passed over when fewer than that many
        are active). Drawn once per epoch (a second call returns the same), advancing the walk's position."""
        if self._drawn is not None and self._drawn[0] == epoch:
            return self._drawn[1]
        needed, n_pool = self.prompts_per_step * world, len(self.train_pool)
        skip = self.pool.sizes(epoch, n_pool)["active"] >= needed
        picked, pos = [], self._cursor
        while len(picked) < needed:
            pass_idx, offset = divmod(pos, n_pool)
            index = int(self._permutation(pass_idx)[offset])
            if not (skip and self.pool.rests(index, epoch)):
                picked.append(index)
            pos += 1
        self._cursor, self._drawn = pos, (epoch, picked)
        return picked

    def report(self, step: int, indices: list[int], outcomes: list[int]) -> dict[str, float]:
        """The module's report after step `step`'s rollout: every process's groups (question index, outcome:
        grpo.data.curriculum.EASY / HARD / MIXED), the same on every process. Returns data/pool/* sizes."""
        if step != self._reported:  # a step replayed after a resume is recorded once
            self.pool.record(step, indices, outcomes)
            self._reported = step
        return self.pool.sizes(step, len(self.train_pool))

    def state_dict(self) -> dict:
        if self.pool is None:
            return {}
        return {"cursor": self._cursor, "drawn": list(self._drawn) if self._drawn else None, "reported": self._reported,
                "pool": self.pool.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if self.pool is None or not state:
            return
        self._cursor, self._reported = int(state["cursor"]), int(state["reported"])
        self._drawn = (int(state["drawn"][0]), [int(i) for i in state["drawn"][1]]) if state["drawn"] else None
        self.pool.load_state_dict(state["pool"])

    def extra_questions(self, epoch: int, rank: int = 0, world: int = 1) -> list[list]:
        """Dynamic sampling's further batches for `epoch` on `rank`: max_extra_batches lists of prompts_per_step
        questions. Batch j is the slice ((j * world + rank) * prompts_per_step, + prompts_per_step) of a
        permutation of the pool seeded by (seed, epoch), wrapping around a small pool."""
        g = torch.Generator().manual_seed((self.seed * 7919 + epoch) * 104_729 + 1)
        order = torch.randperm(len(self.train_pool), generator=g)
        n = self.prompts_per_step
        return [
            [self.train_pool[int(order[pos % len(order)])] for pos in range((j * world + rank) * n, (j * world + rank + 1) * n)]
            for j in range(self.max_extra_batches)
        ]

    def _permutation(self, pass_idx: int) -> torch.Tensor:
        cache = getattr(self, "_perm_cache", None)
        if cache is None or cache[0] != pass_idx:
            g = torch.Generator().manual_seed(self.seed * 7919 + pass_idx)
            self._perm_cache = (pass_idx, torch.randperm(len(self.train_pool), generator=g))
        return self._perm_cache[1]

    # ---- the step's policy updates
    def train_dataloader(self) -> DataLoader:
        epoch = self.trainer.current_epoch
        rank, world = self._rank_world()
        indices = report = None
        if self.pool is None:
            questions = self.questions(epoch, rank, world)
        else:  # the curriculum: this rank's slice of the global batch of questions not resting
            n = self.prompts_per_step
            indices, report = self.curriculum_indices(epoch, world)[rank * n : (rank + 1) * n], self.report
            questions = [self.train_pool[i] for i in indices]
        refill = Refill(self.extra_questions(epoch, rank, world), self.update_groups) if self.dynamic_sampling else None
        plan = minibatch_plan(self.update_groups, self.minibatch_prompts, self.mu, seed=self.seed + epoch)
        items = [StepQuestions(questions, k, len(plan), groups, refill, indices, report) for k, groups in enumerate(plan)]
        return DataLoader(items, batch_size=None, shuffle=False, collate_fn=as_is)

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        return batch  # a step's questions, or held-out (index, Problem) pairs: tokenized onto the device when sampled

    # ---- held-out evaluation
    def val_dataloader(self) -> DataLoader:
        rank, world = self._rank_world()
        items = list(enumerate(self.heldout))[rank::world]  # (global index, problem): sampling is seeded per question
        return DataLoader(items, batch_size=self.val_batch_size, shuffle=False, collate_fn=list)
