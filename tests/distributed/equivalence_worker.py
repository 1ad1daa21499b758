"""One GRPO update on a fixed rollout batch under a strategy; rank 0 writes what the test compares.

    python tests/distributed/equivalence_worker.py STRATEGY DEVICES OUT.pt [ACCELERATOR [AGGREGATION]]

STRATEGY: auto ddp fsdp deepspeed_zero2 deepspeed_zero3 (also fsdp_hybrid, fsdp_replicated_ref), each
optionally with "+lora" (LoRA adapters on the policy: only they train, pi_ref = adapters off);
ACCELERATOR: cpu (default) or gpu; AGGREGATION: sequence (default), token or constant.

The batch: GROUPS groups of G rows (random prompts and completions, old and reference log-probs near
the policy's own so that some ratios clip). With DEVICES processes, rank r takes groups
[r * GROUPS / DEVICES, (r + 1) * GROUPS / DEVICES): equal rows per rank. With aggregation=sequence the
loss is a mean over rows, so the mean of the ranks' gradients is the whole batch's gradient, and one
SGD step must give the parameters one process gets with the whole batch. With aggregation=token the
ranks hold different numbers of tokens; each divides its token sum by the step's count over all ranks
(all-reduced by the module) over the world size, so the average of the ranks' gradients is again the
whole batch's. Gradient clipping is on and active (max norm below the gradient's), so the global norm
under sharding is checked as well.

Also recorded, under the real strategy: the logged (rank-reduced) loss and grad norm; whether the
frozen reference stayed equal to the starting policy; `copy_weights(policy, reference)`; greedy
samples with and without the strategy adapter's `gathered` (and whether the parameters stayed gathered across
forwards); and each rank's training questions for a few epochs (must be disjoint).
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import lightning as L
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # grpo_testkit

from grpo_testkit import tiny_lm  # noqa: E402

from grpo.algo.loss import GRPOLoss  # noqa: E402
from grpo.data.rollout_datamodule import RolloutDataModule, StepQuestions, as_is  # noqa: E402
from grpo.models.adapters import LoRA, lora_layers  # noqa: E402
from grpo.module import GRPOModule  # noqa: E402
from grpo.rollout.batch import RolloutBatch  # noqa: E402
from grpo.rollout.group import Rollout  # noqa: E402
from grpo.strategies import adapter_for  # noqa: E402
from grpo.strategies.fsdp2 import FSDP2Strategy  # noqa: E402
from grpo.strategies.weights import copy_weights, full_state_dict  # noqa: E402
from grpo.strategies.zero import DeepSpeedStrategy  # noqa: E402
from grpo.rollout.logprobs import completion_logprobs  # noqa: E402
from grpo.rollout.sampler import sample  # noqa: E402
from grpo.tasks import ArithmeticTask  # noqa: E402

GROUPS, G, PROMPT, COMPLETION = 4, 4, 6, 8
LR, CLIP = 0.5, 0.05


def strategy_for(name: str):
    return {
        "auto": "auto",
        "ddp": L.pytorch.strategies.DDPStrategy(find_unused_parameters=False),
        "fsdp": FSDP2Strategy(),
        "fsdp_hybrid": FSDP2Strategy(hybrid_shard=True),  # HSDP: on one node, sharded across its processes
        "fsdp_replicated_ref": FSDP2Strategy(shard_frozen=False),  # the reference a full replica per rank
        "deepspeed_zero2": DeepSpeedStrategy(stage=2, logging_batch_size_per_gpu=1),
        "deepspeed_zero3": DeepSpeedStrategy(stage=3, logging_batch_size_per_gpu=1),
    }[name]


def fixed_rollout(policy, vocab: int) -> RolloutBatch:
    """GROUPS * G rows; the same on every rank (seeded), padding and lengths varied."""
    g = torch.Generator().manual_seed(1234)
    N = GROUPS * G
    input_ids = torch.randint(3, vocab, (N, PROMPT + COMPLETION), generator=g)
    attention_mask = torch.ones_like(input_ids)
    pad = torch.randint(0, 3, (N,), generator=g)  # left padding of the prompt
    length = torch.randint(2, COMPLETION + 1, (N,), generator=g)  # completion length
    for i in range(N):
        attention_mask[i, : pad[i]] = 0
        attention_mask[i, PROMPT + length[i] :] = 0
    completion_mask = attention_mask[:, PROMPT:].bool()
    with torch.no_grad():
        logp, _ = completion_logprobs(policy, input_ids, attention_mask, COMPLETION)
    noise = lambda: 0.3 * torch.randn(N, COMPLETION, generator=g)  # noqa: E731
    return RolloutBatch(
        input_ids=input_ids,
        attention_mask=attention_mask,
        completion_mask=completion_mask,
        advantages=torch.randn(N, generator=g),
        old_logp=logp + noise(),  # ratios around 1, some outside [1 - eps, 1 + eps]
        ref_logp=logp + noise(),
    )


class FixedRollout:
    """Stands in for the module's GroupRollout: this rank's equal share of the fixed rollout's groups."""

    group_size, temperature, reward = G, 1.0, None

    def __init__(self, rollout: RolloutBatch):
        self.rollout = rollout

    def __call__(self, policy, reference, problems, generator=None, need_old_logp=False, refill=None) -> Rollout:
        rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)
        per_rank = GROUPS // world
        rows = torch.arange(rank * per_rank * G, (rank + 1) * per_rank * G)
        part = {k: v for k, v in self.rollout.rows(rows).items()}
        self.tokens = int(part["completion_mask"].sum())  # this rank's tokens in the loss
        device = next(policy.parameters()).device
        return Rollout(RolloutBatch(**{k: None if v is None else v.to(device) for k, v in part.items()}), {}, {})


class OneUpdate(L.LightningDataModule):
    """One policy update on the whole (fixed) rollout of this rank."""

    def train_dataloader(self):
        item = StepQuestions([], update=0, updates=1, groups=torch.arange(GROUPS // self.trainer.world_size))
        return DataLoader([item], batch_size=None, collate_fn=as_is)


def with_lora(policy):
    """LoRA adapters (rank 4) with B drawn non-zero (seeded), so that A and B both get gradients."""
    lora = LoRA(r=4, alpha=8)
    policy = lora.apply(policy)
    g = torch.Generator().manual_seed(7)
    for layer in lora_layers(policy):
        weight = layer.lora_B["default"].weight
        weight.data = 0.1 * torch.randn(weight.shape, generator=g)
    return policy, lora


def main(strategy_name: str, devices: int, out: str, accelerator: str = "cpu", aggregation: str = "sequence") -> None:
    strategy_name, _, variant = strategy_name.partition("+")
    policy, tokenizer = tiny_lm(seed=5)
    lora = None
    if variant == "lora":
        policy, lora = with_lora(policy)
    policy.train()
    start = {k: v.clone() for k, v in policy.state_dict().items()}
    rollout = fixed_rollout(policy, len(tokenizer))
    module = GRPOModule(
        policy, tokenizer, task=None, rollout=FixedRollout(rollout), loss=GRPOLoss(beta=0.04, epsilon=0.2, aggregation=aggregation),
        optimizer=functools.partial(torch.optim.SGD, lr=LR), lr_scheduler=None, log_samples=0, lora=lora,
    )
    trainer = L.Trainer(
        accelerator=accelerator, devices=devices, strategy=strategy_for(strategy_name), max_epochs=1,
        gradient_clip_val=CLIP, use_distributed_sampler=False, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
    )
    trainer.fit(module, datamodule=OneUpdate())
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    result = {"metrics": metrics, "world": trainer.world_size, "tokens": _all_gather(module.rollout.tokens)}

    result["policy"] = full_state_dict(module.policy)  # collective: every rank
    if lora is not None:  # pi_ref = the policy's frozen base weights: unchanged by the update
        if trainer.is_global_zero:
            result["reference_frozen"] = all(torch.equal(result["policy"][k], v) for k, v in start.items() if ".lora_" not in k)
    else:
        reference = full_state_dict(module.reference)
        if trainer.is_global_zero:
            result["reference_frozen"] = all(torch.equal(reference[k], start[k]) for k in start)

    # greedy samples: parameters gathered once for all tokens, or (sharded) re-gathered per forward
    device = next(module.policy.parameters()).device
    prompts = rollout.input_ids[:2, :PROMPT].to(device), rollout.attention_mask[:2, :PROMPT].to(device)
    greedy = functools.partial(sample, max_new_tokens=6, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, temperature=0.0)
    module.policy.eval()
    with torch.no_grad():
        plain = greedy(module.policy, *prompts).ids
        with adapter_for(trainer.strategy).gathered(module.policy, trainer.strategy):
            gathered = greedy(module.policy, *prompts).ids
            result["stayed_gathered"] = _all_gathered(module.policy)
    result["greedy"], result["greedy_gathered"] = plain.cpu(), gathered.cpu()
    result["sharded_after"] = _sharded(module.policy)

    if lora is None:
        copy_weights(module.policy, module.reference)  # pi_ref <- pi_theta, as rm_schedule=iterative does
        reference = full_state_dict(module.reference)
        if trainer.is_global_zero:
            result["copied"] = all(torch.allclose(reference[k], result["policy"][k]) for k in result["policy"])

    # which training questions each rank draws (the real RolloutDataModule, under this strategy's ranks)
    datamodule = RolloutDataModule(ArithmeticTask(train_size=400, heldout_size=8), prompts_per_step=4)
    datamodule.trainer = trainer
    datamodule.setup()
    mine = [p.prompt for epoch in range(3) for p in datamodule.questions(epoch, *datamodule._rank_world())]
    result["questions"] = _all_gather(mine)

    if trainer.is_global_zero:
        torch.save(result, out)
    if dist.is_available() and dist.is_initialized():  # tear gloo down before exit: left to the interpreter, it can abort
        dist.barrier()  # ("terminate called without an active exception", exit code 134) after the result is written
        dist.destroy_process_group()


def _all_gathered(model) -> bool:
    """After a whole generation: are all parameters still gathered (not re-sharded after each forward)?"""
    from torch.distributed.tensor import DTensor

    params = list(model.parameters())
    if any(hasattr(p, "ds_status") for p in params):
        from deepspeed.runtime.zero.partition_parameters import ZeroParamStatus

        return all(p.ds_status == ZeroParamStatus.AVAILABLE for p in params)
    return not any(isinstance(p, DTensor) for p in params)


def _sharded(model) -> bool:
    from torch.distributed.tensor import DTensor

    params = list(model.parameters())
    if any(hasattr(p, "ds_status") for p in params):
        from deepspeed.runtime.zero.partition_parameters import ZeroParamStatus

        return all(p.ds_status == ZeroParamStatus.NOT_AVAILABLE for p in params)
    return all(isinstance(p, DTensor) for p in params)


def _all_gather(obj) -> list:
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3], *sys.argv[4:6])
