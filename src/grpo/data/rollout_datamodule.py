"""RolloutDataModule: regenerates the groups every epoch (one epoch = one GRPO step).

`train_dataloader` runs once per epoch (Trainer(reload_dataloaders_every_n_epochs=1)): it takes
this rank's batch of questions, samples G outputs per question from the current policy (pi_old),
scores them, computes advantages, records old and reference log-probs once, and serves mu passes
of mini-batches over that rollout. Question order and sampling noise are functions of
(seed, epoch, rank), so a run resumed from a checkpoint replays exactly what it would have done.
"""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader

from grpo.data.minibatches import RolloutMinibatches
from grpo.rollout.collect import collect_rollout


def _as_list(items):
    return items


class RolloutDataModule(L.LightningDataModule):
    def __init__(
        self,
        task,
        *,
        group_size: int,
        prompts_per_step: int,
        minibatch_prompts: int | None = None,
        mu: int = 1,
        supervision: str = "outcome",
        scale_rewards: bool = True,
        adv_eps: float = 1e-4,
        skip_zero_spread: bool = True,
        max_new_tokens: int = 64,
        temperature: float = 1.0,
        top_p: float = 1.0,
        val_prompts: int = 1000,
        val_batch_size: int = 250,
        seed: int = 0,
    ):
        super().__init__()
        self.task = task
        self.group_size, self.prompts_per_step, self.mu = group_size, prompts_per_step, mu
        self.minibatch_prompts = minibatch_prompts or prompts_per_step
        self.advantage_kwargs = dict(supervision=supervision, scale_rewards=scale_rewards, adv_eps=adv_eps, skip_zero_spread=skip_zero_spread)
        self.sampling = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p)
        self.val_prompts, self.val_batch_size, self.seed = val_prompts, val_batch_size, seed
        self.last_stats: dict[str, float] = {}
        self.last_samples: list = []  # (Problem, completion, reward) of the latest rollout, this rank

    # ---- which questions
    def setup(self, stage: str | None = None) -> None:
        if not hasattr(self, "train_pool"):
            self.train_pool = self.task.train_problems()
            self.heldout = self.task.heldout_problems()[: self.val_prompts]

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

    @property
    def updates_per_rollout(self) -> int:
        return self.mu * (self.prompts_per_step // self.minibatch_prompts)

    # ---- rollouts
    def train_dataloader(self) -> DataLoader:
        module = self.trainer.lightning_module
        epoch = self.trainer.current_epoch
        rank, world = self._rank_world()
        generator = torch.Generator(device="cpu").manual_seed(self.seed * 1_000_003 + epoch * 1009 + rank)
        with module.unsharded_policy():  # sharded strategies: the policy gathered once for the whole rollout
            rollout, self.last_stats, self.last_samples = collect_rollout(
                module.policy,
                module.reference if module.beta > 0 else None,
                module.tokenizer,
                self.questions(epoch, rank, world),
                module.reward,
                self.task,
                group_size=self.group_size,
                generator=generator,
                need_old_logp=self.updates_per_rollout > 1,  # with a single on-policy update rho == 1: skip pi_old
                **self.advantage_kwargs,
                **self.sampling,
            )
        minibatches = RolloutMinibatches(rollout, self.group_size, self.minibatch_prompts, self.mu, seed=self.seed + epoch)
        return DataLoader(minibatches, batch_size=None, shuffle=False)

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        if isinstance(batch, list):  # held-out (index, Problem) pairs: tokenized onto the device at generation
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    # ---- held-out evaluation
    def val_dataloader(self) -> DataLoader:
        rank, world = self._rank_world()
        items = list(enumerate(self.heldout))[rank::world]  # (global index, problem): pass@k uses the index
        return DataLoader(items, batch_size=self.val_batch_size, shuffle=False, collate_fn=_as_list)
