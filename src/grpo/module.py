"""GRPOModule: the policy, its frozen reference and the reward source; the group loss in training_step.

The rollout (sampling, scoring, advantages, old/reference log-probs) is made by RolloutDataModule
once per epoch; each training_step is one policy update on a mini-batch of it (mu passes).
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

from grpo.algo.loss import grpo_loss
from grpo.distributed import configure_for_strategy, gathered_for_generation, total_grad_norm
from grpo.metrics import maj_at_k, pass_at_k
from grpo.rollout.collect import sample_problems
from grpo.rollout.logprobs import completion_logprobs


class GRPOModule(L.LightningModule):
    def __init__(
        self,
        policy,
        tokenizer,
        reward,
        task,
        optimizer,
        lr_scheduler=None,
        *,
        beta: float = 0.04,
        epsilon: float = 0.2,
        epsilon_high: float | None = None,
        kl_estimator: str = "k3",
        aggregation: str = "sequence",
        ratio_level: str = "token",
        temperature: float = 1.0,
        max_new_tokens: int = 64,
        eval_k: int = 8,
        eval_k_prompts: int = 200,
        log_samples: int = 4,
        seed: int = 0,
    ):
        super().__init__()
        self.policy, self.tokenizer, self.reward, self.task = policy, tokenizer, reward, task
        self.reference = None
        if beta > 0:  # pi_ref: a frozen copy of the starting policy (reset each iteration by rm_schedule=iterative)
            self.reference = copy.deepcopy(policy).requires_grad_(False).eval()
        self.optimizer_factory, self.lr_scheduler_factory = optimizer, lr_scheduler
        self.beta = beta
        self.loss_kwargs = dict(
            epsilon=epsilon, epsilon_high=epsilon_high, beta=beta, kl_estimator=kl_estimator, aggregation=aggregation, ratio_level=ratio_level
        )
        self.temperature, self.max_new_tokens = temperature, max_new_tokens
        self.eval_k, self.eval_k_prompts, self.log_samples, self.seed = eval_k, eval_k_prompts, log_samples, seed
        self.val_accuracy, self.val_pass_at_k, self.val_maj_at_k = MeanMetric(), MeanMetric(), MeanMetric()
        self.validated_at: int | None = None  # global step of the latest held-out evaluation

    # ---- training
    def on_train_epoch_start(self) -> None:
        datamodule = self.trainer.datamodule
        stats = datamodule.last_stats
        perf = {k: stats[k] for k in ("gen_time_s", "score_time_s", "logp_time_s", "rollout_tokens_per_s")}
        rollout = {k: v for k, v in stats.items() if k not in perf}
        self.log_dict({f"rollout/{k}": v for k, v in rollout.items()}, on_step=False, on_epoch=True, sync_dist=True)
        self.log_dict({f"perf/{k}": v for k, v in perf.items()}, on_step=False, on_epoch=True, sync_dist=True)
        self._update_start = time.perf_counter()
        self._log_samples(datamodule.last_samples)

    def training_step(self, batch, batch_idx):
        mask = batch["completion_mask"]
        logp, entropy = completion_logprobs(
            self.policy, batch["input_ids"], batch["attention_mask"], mask.shape[1], self.temperature, with_entropy=True
        )
        loss, stats = grpo_loss(logp, batch["old_logp"], batch["ref_logp"], batch["advantages"], mask, **self.loss_kwargs)
        stats["entropy"] = (entropy.detach() * mask).sum() / mask.sum().clamp(min=1)
        rows = mask.shape[0]
        self.log("train/loss", loss.detach(), on_step=False, on_epoch=True, sync_dist=True, batch_size=rows)
        self.log_dict({f"train/{k}": v for k, v in stats.items()}, on_step=False, on_epoch=True, sync_dist=True, batch_size=rows)
        return loss

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

    # ---- scaling out (grpo.distributed)
    def configure_model(self) -> None:
        """Prepare for the strategy: FSDP2 shards the policy (and frozen models) per decoder layer, then the root;
        DDP leaves the frozen models out of gradient sync; one device and DeepSpeed need nothing."""
        configure_for_strategy(self, self.trainer.strategy)

    def unsharded_policy(self):
        """Context for generation: a sharded policy's parameters gathered once, not once per decoded token
        (one collective on entry: every rank enters it equally often; none inside)."""
        return gathered_for_generation(self.policy, self._trainer.strategy if self._trainer is not None else None)

    def on_validation_epoch_start(self) -> None:
        # one gather for the whole evaluation: ranks may get different numbers of batches and k-sample calls
        self._gathered = contextlib.ExitStack()
        self._gathered.enter_context(self.unsharded_policy())

    def on_validation_epoch_end(self) -> None:
        self._gathered.close()
        self.validated_at = self.global_step

    # ---- held-out evaluation: greedy accuracy, and pass@k / maj@k over k sampled answers
    def generate(self, problems, temperature: float, num_samples: int = 1, generator=None) -> list[str]:
        with self.unsharded_policy():
            _, _, out = sample_problems(
                self.policy, self.tokenizer, problems, num_samples=num_samples,
                max_new_tokens=self.max_new_tokens, temperature=temperature, generator=generator,
            )
        return self.tokenizer.batch_decode(out.ids.cpu(), skip_special_tokens=True)

    def validation_step(self, batch, batch_idx):
        indices, problems = zip(*batch)
        greedy = self.generate(problems, temperature=0.0)
        self.val_accuracy.update(torch.tensor([float(self.task.verify(p, c)) for p, c in zip(problems, greedy)]))
        self.log("val/accuracy", self.val_accuracy, on_epoch=True, batch_size=len(problems))

        chosen = [p for i, p in zip(indices, problems) if i < self.eval_k_prompts]
        if chosen and self.eval_k > 0:
            generator = torch.Generator().manual_seed(self.seed * 31 + indices[0])
            texts = self.generate(chosen, temperature=self.temperature, num_samples=self.eval_k, generator=generator)
            k = self.eval_k
            correct = torch.tensor([self.task.verify(chosen[j // k], t) for j, t in enumerate(texts)]).view(-1, k)
            answers = [[self.task.extract_answer(t) for t in texts[j * k : (j + 1) * k]] for j in range(len(chosen))]
            self.val_pass_at_k.update(pass_at_k(correct))
            self.val_maj_at_k.update(maj_at_k(answers, [p.answer for p in chosen]))
            self.log(f"val/pass@{k}", self.val_pass_at_k, on_epoch=True, batch_size=len(chosen))
            self.log(f"val/maj@{k}", self.val_maj_at_k, on_epoch=True, batch_size=len(chosen))

    # ---- text panel
    def _log_samples(self, samples) -> None:
        experiment = getattr(self.logger, "experiment", None)
        if not self.log_samples or not samples or not self.trainer.is_global_zero or not hasattr(experiment, "add_text"):
            return
        rows = ["| prompt | completion | reward |", "|---|---|---|"]
        for problem, completion, reward in samples[: self.log_samples]:
            rows.append(f"| `{problem.prompt}` | `{completion}` | {reward:.2f} |")
        experiment.add_text("rollout/samples", "\n".join(rows), self.global_step)
