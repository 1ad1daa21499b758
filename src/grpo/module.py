"""GRPOModule: the policy, its frozen reference and the step's rollout; the group loss in training_step.

One Lightning epoch is one GRPO step. At its first policy update (`on_train_batch_start`) the module's
rollout (grpo.rollout.group.GroupRollout: engine, reward, advantage estimator, old and reference
log-probs) samples G outputs for each of the step's questions; every training_step is then one policy
update on a mini-batch of whole groups of that rollout (mu passes; RolloutDataModule says which).
Note: with mu == 1 and one mini-batch per rollout, pi_old == pi_theta at the update, so the
importance ratio is exactly 1 and the logged loss sits near 0 by construction; only its gradient
matters. Watch reward, accuracy, KL and clip fraction instead.
"""

from __future__ import annotations

import contextlib
import copy
import time

import lightning as L
import torch
from torchmetrics import MeanMetric

from grpo.algo.aggregation import token_normaliser
from grpo.algo.rollout_correction import mismatch_stats
from grpo.data.curriculum import group_outcomes
from grpo.data.minibatches import group_rows
from grpo.metrics import maj_at_k, pass_at_k, total_grad_norm
from grpo.models.adapters import AdapterFree, fold_adapters
from grpo.rollout.engine import sample_texts
from grpo.rollout.logprobs import completion_logprobs
from grpo.strategies import FSDP2Adapter, ZeroAdapter, adapter_for
from grpo.tasks.base import verified


class GRPOModule(L.LightningModule):
    """policy, tokenizer, task: what is trained and on what; rollout: a GroupRollout (bound to the reward);
    loss: a policy loss (grpo.algo.loss.GRPOLoss or any object with `beta` and the same call; one with
        `needs_entropy` also gets entropy= [N, T], with its gradient if `entropy_grad`, see grpo.algo.entropy);
    optimizer, lr_scheduler: factories (Hydra `_partial_`) taking the parameters / the optimizer;
    lora: the LoRA settings (grpo.models.adapters.LoRA) the policy's adapters were made with (None: full fine-tuning)."""

    def __init__(
        self,
        policy,
        tokenizer,
        task,
        rollout,
        loss,
        optimizer,
        lr_scheduler=None,
        *,
        lora=None,
        eval_k: int = 8,
        eval_k_prompts: int = 200,
        log_samples: int = 4,
        seed: int = 0,
    ):
        super().__init__()
        self.policy, self.tokenizer, self.task, self.rollout, self.loss = policy, tokenizer, task, rollout, loss
        self.lora, self.reference = lora, None
        if loss.beta > 0 and lora is not None:  # pi_ref: the policy with its adapters off (no copy)
            self.reference = AdapterFree(policy)
        elif loss.beta > 0:  # pi_ref: a frozen copy of the starting policy (reset each iteration by rm_schedule=iterative)
            self.reference = copy.deepcopy(policy).requires_grad_(False).eval()
        self.optimizer_factory, self.lr_scheduler_factory = optimizer, lr_scheduler
        self.eval_k, self.eval_k_prompts, self.log_samples, self.seed = eval_k, eval_k_prompts, log_samples, seed
        self.val_accuracy, self.val_pass_at_k, self.val_maj_at_k = MeanMetric(), MeanMetric(), MeanMetric()
        self.validated_at: int | None = None  # global step of the latest held-out evaluation
        self.last_rollout = None  # the current GRPO step's Rollout (its samples feed rm_schedule=iterative)

    # ---- the GRPO step: one rollout, then mu passes of updates over its mini-batches
    def on_train_batch_start(self, batch, batch_idx) -> None:
        if batch.update == 0:
            self._make_rollout(batch, need_old_logp=batch.updates > 1)  # with a single on-policy update rho == 1: skip pi_old
            if batch.report is not None:  # the prompt curriculum wants each group's outcome
                self._report_outcomes(batch)

    def _make_rollout(self, questions, need_old_logp: bool) -> None:
        seed = self.seed * 1_000_003 + self.current_epoch * 1009 + self.global_rank
        generator = torch.Generator(device="cpu").manual_seed(seed)
        with self.unsharded_policy():  # sharded strategies: the policy gathered once for the whole rollout
            rollout = self.rollout(self.policy, self.reference, questions.questions, generator, need_old_logp=need_old_logp,
                                   refill=questions.refill)  # refill: dynamic sampling's further questions, or None
        self.last_rollout = rollout
        # the step's tokens in the loss on all ranks ("token" aggregation divides by it): one collective, every rank, every step
        local_tokens = rollout.batch.completion_mask.sum().reshape(1).long()
        self._step_tokens = float(self.trainer.strategy.reduce(local_tokens, reduce_op="sum").sum())
        self.log_dict({f"rollout/{k}": v for k, v in rollout.stats.items()}, on_step=False, on_epoch=True, sync_dist=True, batch_size=1)
        self.log_dict({f"perf/{k}": v for k, v in rollout.timings.items()}, on_step=False, on_epoch=True, sync_dist=True, batch_size=1)
        self._log_samples(rollout.samples, rollout.components, rollout.shown)
        self._update_start = time.perf_counter()

    def _report_outcomes(self, questions) -> None:
        """The step's groups' outcomes (all right / all wrong / mixed, by the task's verifier) from every process to the
        data module's curriculum (grpo.data.curriculum), the same on all; logs the pool's sizes (data/pool/*). Under
        dynamic sampling only the step's first batch of questions is reported. One all_gather, every rank, every step."""
        n, G = len(questions.questions), self.rollout.group_size
        outcomes = group_outcomes(self.last_rollout.correct[: n * G], G)  # [n]
        local = torch.stack([torch.tensor(questions.indices, dtype=torch.long), outcomes]).to(self.device)  # [2, n]
        every = self.all_gather(local).reshape(-1, 2, n)  # [world, 2, n]
        sizes = questions.report(self.current_epoch, every[:, 0].flatten().tolist(), every[:, 1].flatten().tolist())
        self.log_dict({f"data/pool/{k}": v for k, v in sizes.items()}, on_step=False, on_epoch=True, sync_dist=True, batch_size=1)

    def training_step(self, batch, batch_idx):
        # the update in train mode (and its backward, which follows): gradient checkpointing recomputes only there,
        # and a dropout a setting kept (model.disable_dropout=false, adapter.dropout > 0) acts only there. Sampling
        # and the old/reference log-probs run in eval mode (grpo.rollout.modes.evaluating), whatever this leaves.
        self.policy.train()
        index = group_rows(batch.groups, self.rollout.group_size).to(self.last_rollout.batch.input_ids.device)
        minibatch = self.last_rollout.batch.rows(index)  # this update's whole groups, padding trimmed
        mask = minibatch["completion_mask"]
        logp, entropy = completion_logprobs(
            self.policy, minibatch["input_ids"], minibatch["attention_mask"], mask.shape[1], self.rollout.temperature, with_entropy=True,
            entropy_grad=getattr(self.loss, "entropy_grad", False),  # an entropy bonus (grpo.algo.entropy) needs its gradient
        )
        num_tokens = token_normaliser(self._step_tokens, self.trainer.world_size, self.trainer.accumulate_grad_batches)
        extra = {"entropy": entropy} if getattr(self.loss, "needs_entropy", False) else {}  # a loss that asks gets entropy=
        loss, stats = self.loss(logp, minibatch["old_logp"], minibatch["ref_logp"], minibatch["advantages"], mask,
                                num_tokens=num_tokens, **extra)
        stats["entropy"] = (entropy.detach() * mask).sum() / mask.sum().clamp(min=1)
        rows = mask.shape[0]
        if batch.update == 0 and minibatch["sampler_logp"] is not None and "mismatch/ratio_mean" not in self.last_rollout.stats:
            # the step's first update, before any optimizer step: logp is the trainer's pi_old (its rows only, with mini-batches)
            policy = minibatch.get("policy_mask")  # with tools: tool results are not the sampler's (its logp there is 0)
            policy = minibatch["attention_mask"][:, -mask.shape[1]:].bool() if policy is None else policy
            self._log_mismatch(logp.detach(), minibatch["sampler_logp"], policy)
        self.log("train/loss", loss.detach(), on_step=False, on_epoch=True, sync_dist=True, batch_size=rows)
        # token statistics are measurements only where tokens enter the loss. Every rank logs the same keys (their
        # epoch-end sync is a collective): all of them when any rank's update has tokens, weighted 0 where it has none
        has_tokens = bool(mask.any())
        if self.trainer.strategy.reduce_boolean_decision(has_tokens, all=False):
            self.log_dict({f"train/{k}": v for k, v in stats.items()}, on_step=False, on_epoch=True, sync_dist=True,
                          batch_size=rows if has_tokens else 0)
        return loss

    def _log_mismatch(self, trainer_logp, sampler_logp, completion_tokens) -> None:
        """rollout/mismatch/* of the update's policy tokens, in the loss or not (tool results left out;
        grpo.algo.rollout_correction.mismatch_stats), as the rollout logs them when it computes the trainer's log pi_old."""
        n_tokens = int(completion_tokens.sum())
        stats = mismatch_stats(trainer_logp, sampler_logp, completion_tokens)
        self.log_dict({f"rollout/mismatch/{k}": v for k, v in stats.items()}, on_step=False, on_epoch=True, sync_dist=True,
                      batch_size=max(n_tokens, 1))

    def on_before_optimizer_step(self, optimizer) -> None:
        norm = total_grad_norm(self.policy.parameters())  # the full model's, also with sharded (FSDP2) gradients
        if norm is not None:  # None under DeepSpeed ZeRO, which keeps gradients in its own buffers
            self.log("train/grad_norm", norm, on_step=False, on_epoch=True, sync_dist=True, batch_size=1)

    def on_train_epoch_end(self) -> None:
        self.log("perf/update_time_s", time.perf_counter() - self._update_start, on_step=False, on_epoch=True, sync_dist=True, batch_size=1)

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(p for p in self.policy.parameters() if p.requires_grad)
        if self.lr_scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.lr_scheduler_factory(optimizer), "interval": "step"}}

    def reset_reference(self) -> None:
        """pi_ref <- pi_theta (Algorithm 1, each iteration): the reference becomes a frozen copy of the policy. Every rank.
        With LoRA the adapters are folded into the base weights and restarted, so adapters-off is the current policy."""
        if isinstance(self.reference, AdapterFree):
            strategy = self._trainer.strategy if self._trainer is not None else None
            if isinstance(adapter_for(strategy), (FSDP2Adapter, ZeroAdapter)):
                raise NotImplementedError("rm_schedule=iterative with adapter=lora folds the adapters into whole weights: "
                                          "use strategy=auto or ddp (or adapter=none with fsdp / deepspeed)")
            fold_adapters(self.policy, seed=self.lora.seed * 1_000_003 + self.current_epoch + 1)  # the same draw on every rank
        elif self.reference is not None:
            adapter_for(self._trainer.strategy if self._trainer is not None else None).copy_weights(self.policy, self.reference)

    # ---- scaling out (grpo.strategies)
    def configure_model(self) -> None:
        """What the strategy needs before it wraps the module (e.g. FSDP2 shards policy and reference)."""
        adapter_for(self.trainer.strategy).configure(self, self.trainer.strategy)

    def unsharded_policy(self):
        """Context for generation: a sharded policy's parameters gathered once, not once per decoded token
        (one collective on entry: every rank enters it equally often; none inside)."""
        strategy = self._trainer.strategy if self._trainer is not None else None
        return adapter_for(strategy).gathered(self.policy, strategy)

    # ---- held-out evaluation: greedy accuracy, and pass@k / maj@k over k sampled answers
    def on_validation_epoch_start(self) -> None:
        # one gather for the whole evaluation: ranks may get different numbers of batches and k-sample calls
        self._gathered = contextlib.ExitStack()
        self._gathered.enter_context(self.unsharded_policy())

    def generate(self, problems, temperature: float | None = None, num_samples: int = 1, **kwargs) -> list[str]:
        """Completions of `problems` from the current policy (temperature None: the rollouts'; 0: greedy)."""
        with self.unsharded_policy():
            self.rollout.engine.load_weights(self.policy)
            device = next(self.policy.parameters()).device
            return sample_texts(self.rollout.engine, self.tokenizer, problems, device=device, num_samples=num_samples,
                                temperature=temperature, **kwargs)

    def validation_step(self, batch, batch_idx):
        indices, problems = zip(*batch)
        greedy = self.generate(problems, temperature=0.0)
        self.val_accuracy.update(torch.tensor([float(verified(self.task, p, c)) for p, c in zip(problems, greedy)]))

        chosen = [(i, p) for i, p in zip(indices, problems) if i < self.eval_k_prompts]
        if chosen and self.eval_k > 0:
            k = self.eval_k
            # each sample seeded by (seed, question's global index, sample): a function of the policy alone,
            # whatever the batch, the rank or the number of processes
            row_seeds = [(self.seed * 1_000_003 + i) * 131 + j for i, _ in chosen for j in range(k)]
            chosen = [p for _, p in chosen]
            texts = self.generate(chosen, num_samples=k, row_seeds=row_seeds)
            correct = torch.tensor([verified(self.task, chosen[j // k], t) for j, t in enumerate(texts)]).view(-1, k)
            answers = [[self.task.extract_answer(t) for t in texts[j * k : (j + 1) * k]] for j in range(len(chosen))]
            self.val_pass_at_k.update(pass_at_k(correct))
            self.val_maj_at_k.update(maj_at_k(answers, [p.answer for p in chosen]))

    def on_validation_epoch_end(self) -> None:
        self._gathered.close()
        metrics = {"val/accuracy": self.val_accuracy}
        if self.eval_k > 0 and self.eval_k_prompts > 0:
            metrics |= {f"val/pass@{self.eval_k}": self.val_pass_at_k, f"val/maj@{self.eval_k}": self.val_maj_at_k}
        values = {name: metric.compute() for name, metric in metrics.items()}  # reduced over ranks
        for metric in metrics.values():
            metric.reset()
        self.log_dict(values, logger=False, batch_size=1)  # the trainer's callback metrics and validate()'s return
        if self.logger is not None and not self.trainer.sanity_checking:
            self.logger.log_metrics({k: float(v) for k, v in values.items()}, step=self.global_step)  # at the updates done
        self.validated_at = self.global_step

    # ---- checkpoints: the reward source's state (a learned reward model, its replay history) travels along
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if hasattr(self.rollout.reward, "state_dict"):
            checkpoint["reward_state"] = self.rollout.reward.state_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "reward_state" in checkpoint and hasattr(self.rollout.reward, "load_state_dict"):
            self.rollout.reward.load_state_dict(checkpoint["reward_state"])

    # ---- sampled completions: TensorBoard's text panel, a wandb table
    def _log_samples(self, samples, components=None, shown=None) -> None:
        """The first `log_samples` rows: prompt, completion, reward and each reward component's value (blank: abstained).
        shown: the completions as displayed (tool results marked, grpo.rollout.tool_decode.marked_texts); None: as sampled."""
        if not self.log_samples or not samples or not self.trainer.is_global_zero or self.logger is None:
            return
        names = list(components or {}) if len(components or {}) > 1 else []  # one component: its value is the reward
        columns = ["prompt", "completion", "reward", *names]
        data = [[problem.prompt, shown[i] if shown else completion, reward, *(components[n][i] for n in names)]
                for i, (problem, completion, reward) in enumerate(samples[: self.log_samples])]
        if hasattr(self.logger, "log_table"):  # WandbLogger (logger=wandb)
            self.logger.log_table("rollout/samples", columns=columns, data=data, step=self.global_step)
        experiment = getattr(self.logger, "experiment", None)
        if hasattr(experiment, "add_text"):  # TensorBoard
            cell = lambda v: f"`{v}`" if isinstance(v, str) else "" if v is None else f"{v:.2f}"
            rows = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
            rows += ["| " + " | ".join(cell(v) for v in row) + " |" for row in data]
            experiment.add_text("rollout/samples", "\n".join(rows), self.global_step)
