"""Iterative GRPO (the paper's Algorithm 1) as a Lightning Callback: rm_schedule=iterative.

    for iteration = 1..I:
        pi_ref <- pi_theta                       # GRPOModule.reset_reference
        M GRPO steps (M trainer epochs)
        continue training r_phi on samples of the current policy, mixing in replay_share history

Where this sits in Lightning's loop: a step's rollout (which records the reference log-probs) is made
at the step's first update. So the work of an iteration boundary is done right after the last policy
update of the iteration's last step (the `on_train_batch_end` of that epoch's last batch): the reward
model is retrained (`LearnedReward.retrain`), then the reference becomes a copy of the policy, which
no update changes before the next rollout. That is also before validation and checkpointing of the
epoch, so a checkpoint never holds a half-done boundary.

The samples the policy produced during the iteration (each step's rollout, from every rank, labelled
by the verifier) form the fresh set. At the boundary the reward model is trained for `rm_steps` on
the fresh set plus replayed history (`ReplayBuffer.mix`: replayed / total == replay_share); the fresh
set then joins the history. The buffer starts with the initial reward model's training set. The
reward model's accuracy and AUROC on fresh samples of the current policy (held-out questions, one
sample each) are logged before and after retraining: the gap shows how far the policy drifted from
what the reward model knew. With a reward that does not learn (the verifier) only the reference is reset.

rm_schedule=online (conf/rm_schedule/online.yaml) is the same loop with a short iteration (k GRPO steps, k = 1
allowed) and `reset_reference=False`: the reward model keeps up with the policy (PRIME, arXiv 2502.01456, updates
its process reward on every batch of rollouts) while pi_ref stays the starting policy. What it costs is logged
every step: rm/label_time_s (labelling this step's rollout; Monte-Carlo continuations with step_labels=mc),
rm/labelled_steps, and at each retraining rm/train_time_s (evaluation, retraining and its checks).

Checkpoints carry the fresh set and the replay buffer (this callback's state) and the reward model's
weights (the module's), so a resumed run continues exactly. Under every strategy every rank keeps
the same fresh set and buffer (each step's samples are gathered from all ranks) and the ranks
retrain the reward model together.
"""

from __future__ import annotations

import logging
import math
import time

import torch
from lightning.pytorch import Callback

from grpo.rewards.combine import learned_component
from grpo.rewards.learned.data import RMExample
from grpo.rewards.learned.training import all_gather_objects
from grpo.rewards.replay import ReplayBuffer

log = logging.getLogger(__name__)


class IterativeSchedule(Callback):
    def __init__(
        self,
        steps_per_iteration: int,
        iterations: int | None = None,
        replay_share: float = 0.1,
        replay_capacity: int | None = None,
        rm_steps: int = 100,
        rm_batch_size: int = 32,
        rm_lr: float = 1e-4,
        eval_samples: int = 64,
        seed: int = 0,
        reset_reference: bool = True,
    ):
        if steps_per_iteration < 1:
            raise ValueError(f"rm_schedule.steps_per_iteration={steps_per_iteration}: an iteration needs at least 1 GRPO step")
        if iterations is not None and iterations < 1:
            raise ValueError(f"rm_schedule.iterations={iterations}: use at least 1, or null to iterate until grpo.steps")
        self.steps_per_iteration, self.iterations = steps_per_iteration, iterations
        self.replay_share, self.rm_steps, self.rm_batch_size, self.rm_lr = replay_share, rm_steps, rm_batch_size, rm_lr
        if not isinstance(eval_samples, int) or isinstance(eval_samples, bool) or eval_samples < 0:
            raise ValueError(f"rm_schedule.eval_samples={eval_samples!r}: a count >= 0 (0: no rm/*_before|after evaluation)")
        if not isinstance(reset_reference, bool):
            raise ValueError(f"rm_schedule.reset_reference={reset_reference!r} must be true or false")
        self.eval_samples, self.seed, self.reset_reference = eval_samples, seed, reset_reference
        self.buffer = ReplayBuffer(capacity=replay_capacity, seed=seed)
        self.fresh: list = []  # this iteration's labelled policy samples, as RMExample.to_plain() lists
        self._reward = None
        self._restored = False

    # ---- lifecycle
    def setup(self, trainer, pl_module, stage: str) -> None:
        self._reward = learned_component(pl_module.rollout.reward)  # a reward that learns (alone or a weighted component)

    def on_train_start(self, trainer, pl_module) -> None:
        total = (self.iterations or 0) * self.steps_per_iteration
        if total > trainer.max_epochs:
            log.warning("rm_schedule: %d iterations of %d steps need %d GRPO steps; grpo.steps=%d ends the run first",
                        self.iterations, self.steps_per_iteration, total, trainer.max_epochs)
        if self._reward is not None and not self._restored:  # history starts with what the initial model learned from
            self.buffer.add(e.to_plain() for e in self._reward.initial_examples)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx + 1 == trainer.num_training_batches:  # the step's last policy update is done
            self._end_of_step(trainer, pl_module)

    def _end_of_step(self, trainer, pl_module) -> None:
        epoch = trainer.current_epoch
        cost = {}
        if self._reward is not None:
            rollout = pl_module.last_rollout  # (Problem, completion, reward) of this step's rollout, this rank; their endings
            samples = rollout.samples
            t0 = time.perf_counter()
            labelled = self._reward.label([s[0] for s in samples], [s[1] for s in samples], rollout.ended or None)
            cost["rm/label_time_s"] = time.perf_counter() - t0  # this rank's labelling (MC: continuations sampled)
            parts = all_gather_objects([e.to_plain() for e in labelled])
            cost["rm/labelled_steps"] = float(sum(len(e[2]) for part in parts for e in part))  # all ranks, this step
            for part in parts:
                self.fresh += part
        n_fresh = len(self.fresh)
        if (epoch + 1) % self.steps_per_iteration == 0:
            iteration = (epoch + 1) // self.steps_per_iteration  # iterations completed, this one included
            if self._reward is not None:
                t0 = time.perf_counter()
                self._retrain(trainer, pl_module, iteration)
                cost["rm/train_time_s"] = time.perf_counter() - t0
            if self.reset_reference:  # Algorithm 1; rm_schedule=online keeps pi_ref the starting policy
                pl_module.reset_reference()
            pl_module.log("rm/iteration", float(iteration), on_step=False, on_epoch=True, sync_dist=False, batch_size=1)
            if self.iterations is not None and iteration >= self.iterations:
                trainer.should_stop = True
        if self._reward is not None:  # every step: the fresh set grows through an iteration, then joins the history
            sizes = {"rm/fresh_size": float(n_fresh), "rm/buffer_size": float(len(self.buffer))} | cost
            pl_module.log_dict(sizes, on_step=False, on_epoch=True, sync_dist=False, batch_size=1)

    # ---- reward-model retraining
    def _retrain(self, trainer, pl_module, iteration: int) -> None:
        reward = self._reward
        eval_examples = self._fresh_eval_examples(trainer, pl_module, iteration) if self.eval_samples else []
        mixed = self.buffer.mix(self.fresh, self.replay_share, torch.Generator().manual_seed(self.seed * 1009 + iteration))
        before = reward.evaluate(eval_examples) if eval_examples else {}
        reward.retrain([RMExample.from_plain(e) for e in mixed], steps=self.rm_steps, batch_size=self.rm_batch_size,
                       lr=self.rm_lr, seed=self.seed * 7919 + iteration, progress=trainer.is_global_zero)
        _check_replicas(reward.model)
        after = reward.evaluate(eval_examples) if eval_examples else {}
        metrics = {f"rm/{k}_before": v for k, v in before.items()} | {f"rm/{k}_after": v for k, v in after.items()}
        metrics["rm/replayed_size"] = float(len(mixed) - len(self.fresh))
        self.buffer.add(self.fresh)
        self.fresh = []
        pl_module.log_dict(metrics, on_step=False, on_epoch=True, sync_dist=False, batch_size=1)
        (log.info if eval_examples else log.debug)("Iteration %d: reward model on fresh samples of the policy: %s", iteration, ", ".join(
            f"{k[3:]} {v:.3f}" for k, v in metrics.items() if not math.isnan(v)))

    def _fresh_eval_examples(self, trainer, pl_module, iteration: int) -> list[RMExample]:
        """`eval_samples` samples of the current policy on held-out questions, labelled; every rank gets all."""
        heldout, world = pl_module.task.heldout_problems(), trainer.world_size
        count = -(-self.eval_samples // world) * world  # every rank generates (a collective under fsdp / zero-3)
        questions = [heldout[i % len(heldout)] for i in range(count)]
        mine = questions[trainer.global_rank :: world]
        generator = torch.Generator(device=pl_module.device).manual_seed(self.seed * 104_729 + iteration * 131 + trainer.global_rank)
        texts = pl_module.generate(mine, num_samples=1, generator=generator)
        labelled = self._reward.label(mine, texts, ended_from_length(pl_module.tokenizer, texts, pl_module.rollout.engine.max_new_tokens))
        return [RMExample.from_plain(e) for part in all_gather_objects([e.to_plain() for e in labelled]) for e in part]

    # ---- checkpoints: the replay mechanism's state (the reward model's weights travel with the module)
    def state_dict(self) -> dict:
        return {"fresh": list(self.fresh), "buffer": self.buffer.state_dict()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.fresh = list(state_dict["fresh"])
        self.buffer.load_state_dict(state_dict["buffer"])
        self._restored = True


def ended_from_length(tokenizer, texts: list[str], max_new_tokens: int) -> list[bool]:
    """Per decoded completion: True if shorter than the length limit (so the policy wrote EOS), re-tokenized."""
    return [len(ids) < max_new_tokens for ids in tokenizer(texts, add_special_tokens=False).input_ids]


@torch.no_grad()
def _check_replicas(model) -> None:
    """Raise if the ranks' reward models differ (they are trained in lockstep and must stay identical)."""
    checksum = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum().item()
    sums = all_gather_objects(checksum)
    if len(set(sums)) > 1:
        raise RuntimeError(f"reward model replicas diverged across ranks after retraining (checksums {sums})")
