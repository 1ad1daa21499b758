"""Real 2-process runs on CPU (gloo), each a subprocess like a user's command:

- `python train.py -m strategy=ddp,fsdp ...`: a 2-job sweep, each job 2 processes. Exactly one sweep
  folder, one folder per job; each job trains (parameters move), checkpoints and exports one full HF
  model; its rank 1 ran inside that job's folder (Lightning alone would replay the sweep there).
- fsdp resume: from the fsdp job's step-2 checkpoint (a folder of per-rank shards) to step 3, under
  fsdp again, gives exactly the uninterrupted run's weights.
- deepspeed_zero3 on CPU (grpo.distributed.DeepSpeedStrategy): the whole pipeline, 2 processes.
- equivalence: one update on a fixed rollout batch, 2 processes with half the groups each (ddp, fsdp,
  ZeRO-2, ZeRO-3) vs 1 process with all of them: same parameters, same reduced loss and grad norm;
  plus the frozen reference, copy_weights, gathered generation and disjoint questions under each
  strategy (tests/distributed/equivalence_worker.py); and with aggregation=token and uneven tokens per
  rank (ddp), the step's token count all-reduced.
- dynamic sampling under ddp with ranks drawing different numbers of generation batches: lock-step kept.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from distributed_testkit import SIGNAL, has_compiler, parameters, read_probes, run_python, train, warm_start
from grpo_testkit import cpu_bf16_attention_error, read_scalars, tiny_lm

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]

WORKER = Path(__file__).with_name("equivalence_worker.py")
EVERY_STEP = ["callbacks.model_checkpoint.every_n_epochs=1", "callbacks.model_checkpoint.save_top_k=-1"]
NO_COMPILER = "DeepSpeed on CPU compiles a C++ op: no compiler here"


# ---------------------------------------------------------------- a 2-job sweep of 2-process jobs
@pytest.fixture(scope="module")
def sweep(base_overrides, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("sweep_cwd")
    root = cwd / "multirun"
    train(
        ["-m", "strategy=ddp,fsdp", "supervision=process", "grpo.steps=3", *base_overrides, *SIGNAL, *EVERY_STEP,
         f"hydra.sweep.dir={root}/${{now:%Y-%m-%d_%H-%M-%S}}", "hydra.sweep.subdir=${hydra.job.num}"],
        cwd,
    )
    return cwd, root


def test_sweep_makes_one_folder_per_job(sweep):
    cwd, root = sweep
    assert [p.name for p in cwd.iterdir()] == ["multirun"]  # nothing else (no outputs/ of a replayed rank)
    (sweep_dir,) = list(root.iterdir())  # rank 1 replaying the sweep would add a second one
    assert sorted(p.name for p in sweep_dir.iterdir()) == ["0", "1", "multirun.yaml"]
    for job in ("0", "1"):
        files = {p.name for p in (sweep_dir / job).iterdir()}
        assert {".hydra", "tb", "checkpoints", "export", "train.log", "train_ddp_process_1.log"} <= files, files


@pytest.mark.parametrize("job, strategy", [("0", "ddp"), ("1", "fsdp")])
def test_each_job_trains_and_exports_one_full_model(sweep, warm_cache, job, strategy):
    _, root = sweep
    run_dir = next(root.iterdir()) / job
    assert f"strategy: {strategy}" in (run_dir / ".hydra" / "hydra.yaml").read_text()
    start, final = parameters(warm_start(warm_cache)), parameters(run_dir / "export")
    assert start.keys() == final.keys()
    assert all(final[k].shape == start[k].shape for k in start)  # full tensors, not one rank's shard
    assert any(not torch.equal(final[k], start[k]) for k in start)  # the updates moved the policy
    scalars = read_scalars(run_dir / "tb")
    assert len(scalars["rollout/reward_mean"]) == 3 and len(scalars["train/loss"]) == 3
    assert scalars["train/grad_norm"][-1][1] > 0  # logged (and reduced across ranks) under both strategies
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").glob("epoch[0-9]*.ckpt"))
    assert len(checkpoints) == 3, checkpoints
    assert (run_dir / "checkpoints" / checkpoints[1]).is_dir() == (strategy == "fsdp")  # fsdp: per-rank shards


def test_evaluation_does_not_depend_on_the_number_of_processes(sweep, base_overrides, tmp_path):
    """pass@k and maj@k of the starting policy: the ddp job's 2 processes (each half of the held-out questions)
    give what 1 process gives, since every sample is seeded by its question's global index."""
    _, root = sweep
    two = read_scalars(next(root.iterdir()) / "0" / "tb")
    one_dir = tmp_path / "one"
    train(["supervision=process", "grpo.steps=1", *base_overrides, *SIGNAL, f"hydra.run.dir={one_dir}"], tmp_path)
    one = read_scalars(one_dir / "tb")
    for tag in ("initial/pass@2", "initial/maj@2"):
        assert one[tag][-1][1] == two[tag][-1][1], tag
    assert abs(one["initial/accuracy"][-1][1] - two["initial/accuracy"][-1][1]) <= 1 / 16  # greedy: batch padding may flip a tie


def test_fsdp_resume_reproduces_the_uninterrupted_run(sweep, base_overrides, tmp_path):
    _, root = sweep
    full = next(root.iterdir()) / "1"
    (ckpt,) = (full / "checkpoints").glob("epoch0001-*")  # after 2 of the 3 GRPO steps
    assert sorted(p.name for p in ckpt.iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp", "meta.pt"]  # a shard per rank
    resumed = tmp_path / "resumed"  # (the checkpoint's name holds '=': quoted for Hydra below)
    train(
        ["strategy=fsdp", "supervision=process", "grpo.steps=3", *base_overrides, *SIGNAL, f"ckpt_path='{ckpt}'", f"hydra.run.dir={resumed}"],
        tmp_path,
    )
    assert len(read_scalars(resumed / "tb")["rollout/reward_mean"]) == 1  # only the missing step
    a, b = parameters(full / "export"), parameters(resumed / "export")
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-6, atol=1e-7)


@pytest.mark.skipif(not has_compiler(), reason=NO_COMPILER)
def test_deepspeed_zero3_pipeline_on_cpu(base_overrides, warm_cache, tmp_path):
    out = tmp_path / "run"
    train(["strategy=deepspeed_zero3", *base_overrides, *SIGNAL, f"hydra.run.dir={out}"], tmp_path)
    start, final = parameters(warm_start(warm_cache)), parameters(out / "export")
    assert all(final[k].shape == start[k].shape for k in start)
    assert any(not torch.equal(final[k], start[k]) for k in start)
    assert (out / "checkpoints" / "last.ckpt").is_dir() and (out / "train_ddp_process_1.log").exists()


def test_dynamic_sampling_ranks_draw_their_own_batches_in_lock_step(base_overrides, tmp_path):
    """grpo.dynamic_sampling under ddp: rank 0 finds no group with spread and draws all 1 + 2 generation
    batches, keeping none (its update holds 4 flat fillers: advantage 0, in the loss for their KL term since
    beta > 0); rank 1 keeps 4 groups with spread, first in its update. The ranks' updates (and the step's one
    token-count all-reduce, which adds both ranks' tokens) stay in lock-step, both log the same keys (their
    epoch-end sync is a collective: a mismatch used to hang), and the run finishes."""
    out, probes = tmp_path / "run", tmp_path / "probes"
    train(["strategy=ddp", "grpo.steps=2", "grpo.aggregation=token", "grpo.minibatch_prompts=2", *base_overrides,
           "reward._target_=distributed_testkit.SpreadOnRank1", "grpo.dynamic_sampling.enabled=true",
           "grpo.dynamic_sampling.max_extra_batches=2", "+callbacks.probe._target_=distributed_testkit.UpdateProbe",
           f"+callbacks.probe.path={probes}", f"hydra.run.dir={out}"], tmp_path)
    rank0, rank1 = read_probes(probes)
    assert len(rank0["steps"]) == len(rank1["steps"]) == 2
    for zero, one in zip(rank0["steps"], rank1["steps"]):
        assert zero["stats"]["gen_batches"] == 3.0 and zero["stats"]["groups_kept"] == 0.0  # drew every batch it may
        assert zero["group_spread"] == [False] * 4 and zero["group_in_loss"] == [True] * 4  # fillers: KL term only
        kept = int(one["stats"]["groups_kept"])
        assert 1 <= one["stats"]["gen_batches"] <= 3 and kept >= 1
        assert one["group_spread"] == [True] * kept + [False] * (4 - kept)  # the informative groups, then fillers
        assert zero["step_tokens"] == one["step_tokens"] == zero["local_tokens"] + one["local_tokens"]  # all-reduced
    scalars = read_scalars(out / "tb")
    assert len(scalars["train/kl"]) == 2 and (out / "export").is_dir()


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_lora_checkpointing_bf16_train_on_two_processes(strategy, base_overrides, warm_cache, tmp_path):
    """adapter=lora + model.gradient_checkpointing + trainer.precision=bf16-mixed under a 2-process strategy: on each
    rank every decoder layer's forward in an update is recomputed in its backward and the update computes in
    bfloat16; the run trains (the merged export differs from the start), exports one plain checkpoint, and logs
    finite losses."""
    if cpu_bf16_attention_error():
        pytest.skip(cpu_bf16_attention_error())
    out, probes = tmp_path / "run", tmp_path / "probes"
    train([f"strategy={strategy}", *base_overrides, *SIGNAL, "adapter=lora", "adapter.r=4", "optimizer.lr=1e-2",
           "model.gradient_checkpointing=true", "trainer.precision=bf16-mixed", "+callbacks.probe._target_=distributed_testkit.UpdateProbe",
           f"+callbacks.probe.path={probes}", f"hydra.run.dir={out}"], tmp_path)
    for rank in read_probes(probes):
        assert rank["forward"] == 2 * 2  # 2 GRPO steps x 2 layers (debug=default), one update each
        assert rank["recomputed"] == rank["forward"]  # checkpointing: each layer's forward once more in the backward
        assert rank["update_dtypes"] == ["torch.bfloat16"]  # autocast: the update's logits in bfloat16
    start, final = parameters(warm_start(warm_cache)), parameters(out / "export")
    assert set(final) == set(start)  # a plain transformers checkpoint: the adapters merged in
    assert any(not torch.equal(final[k], start[k]) for k in start)
    losses = read_scalars(out / "tb")["train/loss"]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(v)) for _, v in losses)


def test_lora_iterative_fold_draws_the_same_adapters_on_both_ranks(base_overrides, tmp_path):
    """adapter=lora + rm_schedule=iterative under ddp: each iteration (here each step) folds the adapters into the
    base weights and re-draws A. The reward draws from the global random state a different amount on each rank;
    the fold's draw is seeded, so both ranks keep the same weights (an unseeded draw gives each rank its own A,
    which DDP never reconciles: it averages gradients, not weights)."""
    out, saved = tmp_path / "run", tmp_path / "weights"
    train(["strategy=ddp", "grpo.steps=2", *base_overrides, "reward._target_=distributed_testkit.RankNoiseDigitShare", "adapter=lora",
           "adapter.r=4", "optimizer.lr=1e-2", "rm_schedule=iterative", "+callbacks.save_policy._target_=distributed_testkit.SavePolicy",
           f"+callbacks.save_policy.path={saved}", f"hydra.run.dir={out}"], tmp_path)
    rank0, rank1 = (torch.load(saved / f"rank{r}.pt") for r in (0, 1))
    folded = [k for k in rank0 if ".lora_B." in k]
    assert folded and all(not rank0[k].any() for k in folded)  # the last step ended with a fold: B = 0
    assert len(read_scalars(out / "tb")["rm/iteration"]) == 2  # two iterations, two folds
    for name, value in rank0.items():
        assert torch.equal(rank1[name], value), name


# ---------------------------------------------------------------- one update: 2 processes == 1 process
def worker(strategy: str, devices: int, out: Path, aggregation: str = "sequence") -> dict:
    run_python([str(WORKER), strategy, str(devices), str(out), "cpu", aggregation], out.parent)
    return torch.load(out, weights_only=False)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    return worker("auto", 1, tmp_path_factory.mktemp("equivalence") / "auto.pt")


@pytest.mark.parametrize("strategy", ["ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3"])
def test_two_processes_update_like_one(one_process, strategy, tmp_path):
    if strategy.startswith("deepspeed") and not has_compiler():
        pytest.skip(NO_COMPILER)
    one, two = one_process, worker(strategy, 2, tmp_path / f"{strategy}.pt")
    assert (one["world"], two["world"]) == (1, 2)

    # the same parameters after the update (and the update did move them)
    moved = max((one["policy"][k] - p).abs().max().item() for k, p in full_start().items())
    assert moved > 1e-3
    for name, value in one["policy"].items():
        torch.testing.assert_close(two["policy"][name], value, rtol=1e-5, atol=1e-6)

    # logged metrics are reduced across ranks: the mean of equal-sized ranks' means is the batch mean
    assert two["metrics"]["train/loss"] == pytest.approx(one["metrics"]["train/loss"], rel=1e-5)
    if not strategy.startswith("deepspeed"):  # ZeRO keeps gradients in its own buffers: no grad_norm to log
        assert two["metrics"]["train/grad_norm"] == pytest.approx(one["metrics"]["train/grad_norm"], rel=1e-5)

    assert two["reference_frozen"] and two["copied"]  # frozen under the strategy; copy_weights reaches it
    assert two["stayed_gathered"]  # generation gathered the parameters once, not once per forward
    assert two["sharded_after"] == (strategy in ("fsdp", "deepspeed_zero3"))  # and sharded again afterwards
    assert torch.equal(two["greedy"], one["greedy"]) and torch.equal(two["greedy_gathered"], one["greedy"])

    rank0, rank1 = two["questions"]
    assert len(rank0) == len(rank1) == 12 and not set(rank0) & set(rank1)  # no question on both ranks


@pytest.mark.parametrize("strategy", ["ddp"])
def test_token_aggregation_two_processes_update_like_one(strategy, tmp_path):
    """aggregation=token (DAPO) with uneven tokens per rank: each rank divides its token sum by the step's
    count over both ranks / 2, so DDP's average of the gradients is the whole batch's sum / its count."""
    one = worker("auto", 1, tmp_path / "token_auto.pt", aggregation="token")
    two = worker(strategy, 2, tmp_path / f"token_{strategy}.pt", aggregation="token")
    (total,), (rank0, rank1) = one["tokens"], two["tokens"]
    assert rank0 != rank1 and rank0 + rank1 == total  # uneven: a per-rank token mean would differ from one process's
    moved = max((one["policy"][k] - p).abs().max().item() for k, p in full_start().items())
    assert moved > 1e-3
    for name, value in one["policy"].items():
        torch.testing.assert_close(two["policy"][name], value, rtol=1e-5, atol=1e-6)
    assert two["metrics"]["train/loss"] == pytest.approx(one["metrics"]["train/loss"], rel=1e-5)
    assert two["metrics"]["train/grad_norm"] == pytest.approx(one["metrics"]["train/grad_norm"], rel=1e-5)


@pytest.fixture(scope="module")
def one_process_lora(tmp_path_factory):
    return worker("auto+lora", 1, tmp_path_factory.mktemp("equivalence") / "auto_lora.pt")


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_update_lora_like_one(one_process_lora, strategy, tmp_path):
    """adapter=lora under ddp and fsdp: the adapters' update equals one process's; the base weights (pi_ref) stay."""
    one, two = one_process_lora, worker(f"{strategy}+lora", 2, tmp_path / f"{strategy}_lora.pt")
    assert (one["world"], two["world"]) == (1, 2)
    adapters = [k for k in one["policy"] if ".lora_" in k]
    assert adapters and one["reference_frozen"] and two["reference_frozen"]
    start = two_start_lora()
    assert max((one["policy"][k] - start[k]).abs().max().item() for k in adapters) > 1e-3  # the adapters moved
    for name, value in one["policy"].items():
        torch.testing.assert_close(two["policy"][name], value, rtol=1e-5, atol=1e-6)
    assert two["metrics"]["train/loss"] == pytest.approx(one["metrics"]["train/loss"], rel=1e-5)
    assert two["metrics"]["train/grad_norm"] == pytest.approx(one["metrics"]["train/grad_norm"], rel=1e-5)
    assert torch.equal(two["greedy"], one["greedy"])


def two_start_lora() -> dict[str, torch.Tensor]:
    from equivalence_worker import with_lora

    return dict(with_lora(tiny_lm(seed=5)[0])[0].state_dict())  # the worker's starting LoRA policy


def full_start() -> dict[str, torch.Tensor]:
    return dict(tiny_lm(seed=5)[0].state_dict())  # the worker's starting policy
