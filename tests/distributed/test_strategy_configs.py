"""Every strategy composes with every supervision, reward and schedule option and gives a Trainer with the
right strategy (nothing is launched here); the SLURM launcher config renders the sbatch script SLURM would
get; the pieces of grpo.strategies and grpo.launch that need no process group: which modules DDP leaves out, which
layers FSDP2 wraps, the command line of a launched rank, a full export from one process."""

from __future__ import annotations

import json
import os

import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy, ModelParallelStrategy
from omegaconf import OmegaConf

from grpo.checks import check_config
from grpo.algo.loss import GRPOLoss
from grpo.launch import JOB_ENV, launched_rank_argv
from grpo.module import GRPOModule
from grpo.strategies import adapter_for
from grpo.strategies.base import frozen_models
from grpo.strategies.fsdp2 import FSDP2Strategy, decoder_layers
from grpo.strategies.weights import export_pretrained, full_state_dict
from grpo_testkit import CONF_DIR, compose_config, tiny_lm

STRATEGIES = sorted(f.stem for f in (CONF_DIR / "strategy").glob("*.yaml"))
EXPECTED = {
    "auto": str,
    "ddp": DDPStrategy,
    "fsdp": FSDP2Strategy,
    "deepspeed": DeepSpeedStrategy,
    "deepspeed_zero2": DeepSpeedStrategy,
    "deepspeed_zero3": DeepSpeedStrategy,
}
STAGE = {"deepspeed": 2, "deepspeed_zero2": 2, "deepspeed_zero3": 3}


def options(group: str) -> list[str]:
    return sorted(f.stem for f in (CONF_DIR / group).glob("*.yaml"))


COMBOS = [(s, sup, r, sch) for s in STRATEGIES for sup in options("supervision") for r in options("reward") for sch in options("rm_schedule")]


def test_the_issue_s_strategies_exist():
    assert {"auto", "ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3"} <= set(STRATEGIES)
    assert set(STRATEGIES) <= set(EXPECTED), "a new strategy option: say here which class it must give"


@pytest.mark.parametrize("strategy, supervision, reward, schedule", COMBOS, ids=["-".join(c) for c in COMBOS])
def test_strategy_composes_with_every_option(strategy, supervision, reward, schedule, tmp_path):
    overrides = [f"strategy={strategy}", f"supervision={supervision}", f"reward={reward}", f"rm_schedule={schedule}"]
    cfg = compose_config(["debug=default", *overrides], output_dir=tmp_path)
    check_config(cfg)
    plain = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    OmegaConf.to_container(plain, resolve=True, throw_on_missing=True)

    trainer = instantiate(cfg.trainer, logger=False, callbacks=[], enable_checkpointing=False)  # builds, launches nothing
    assert isinstance(trainer.strategy, EXPECTED[strategy]) if EXPECTED[strategy] is not str else trainer.num_devices == 1
    if strategy != "auto":
        assert trainer.num_devices == cfg.trainer.devices == 2  # CPU default: 2 processes (GPU: trainer.devices=N)
    if strategy in STAGE:
        assert trainer.strategy.zero_stage_3 == (STAGE[strategy] == 3)


def test_fsdp_options_reach_the_strategy(tmp_path):
    cfg = compose_config(
        ["strategy=fsdp", "trainer.strategy.hybrid_shard=true", "trainer.strategy.shard_frozen=false"],
        output_dir=tmp_path,
    )
    strategy = instantiate(cfg.trainer.strategy)
    assert isinstance(strategy, ModelParallelStrategy)  # Lightning's, with torch's fully_shard (FSDP2)
    assert (strategy.hybrid_shard, strategy.shard_frozen) == (True, False)
    assert strategy._save_distributed_checkpoint is True


# ---------------------------------------------------------------- SLURM through Hydra's submitit launcher
def test_slurm_launcher_renders_the_job_the_trainer_expects(tmp_path, monkeypatch):
    """hydra/launcher=slurm: one SLURM job per Hydra job, trainer.num_nodes nodes x trainer.devices tasks (= GPUs)."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    submitit = pytest.importorskip("submitit")
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\nexit 0\n")  # submitit checks that srun exists
    (fake_bin / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")

    cfg = compose_config(
        ["hydra/launcher=slurm", "strategy=fsdp", "trainer.devices=8", "trainer.num_nodes=4",
         "hydra.launcher.partition=gpu", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        output_dir=tmp_path / "run",
    )
    assert cfg.hydra.runtime.choices["hydra/launcher"] == "slurm"
    launcher = instantiate(cfg.hydra.launcher)
    assert type(launcher).__name__ == "SlurmLauncher"

    submitted = {}

    def map_array(executor, fn, *job_args):  # stands in for sbatch: keep the executor, submit nothing
        submitted.update(executor=executor, overrides=job_args[0])
        return []

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", map_array)
    launcher.config = cfg  # what Hydra's launcher.setup() sets
    launcher.launch([["grpo.beta=0"], ["grpo.beta=0.04"]], initial_job_idx=0)
    assert submitted["overrides"] == (["grpo.beta=0"], ["grpo.beta=0.04"])
    script = submitted["executor"]._executor._make_submission_file_text("python -u -m submitit.core._submit x", "uid")
    for line in ("--nodes=4", "--ntasks-per-node=8", "--gpus-per-node=8", "--partition=gpu", "--cpus-per-task=8"):
        assert f"#SBATCH {line}\n" in script, line
    assert "srun " in script  # every task (= rank) is started by SLURM; Lightning's SLURMEnvironment reads it


def test_num_nodes_reaches_the_strategy(tmp_path):
    for strategy in ("ddp", "fsdp"):
        cfg = compose_config([f"strategy={strategy}", "trainer.num_nodes=3", "trainer.devices=1"], output_dir=tmp_path)
        trainer = instantiate(cfg.trainer, logger=False, callbacks=[], enable_checkpointing=False)
        assert trainer.num_nodes == trainer.strategy.num_nodes == 3


# ---------------------------------------------------------------- grpo.strategies without a process group
def grpo_module(beta=0.04):
    policy, tokenizer = tiny_lm(seed=1)
    return GRPOModule(policy.train(), tokenizer, task=None, rollout=None, loss=GRPOLoss(beta=beta), optimizer=torch.optim.SGD)


def test_ddp_leaves_the_frozen_reference_out():
    module = grpo_module()
    assert set(frozen_models(module)) == {"reference"}
    strategy = DDPStrategy()
    adapter_for(strategy).configure(module, strategy)
    ignored = set(module._ddp_params_and_buffers_to_ignore)
    assert {f"reference.{n}" for n, _ in module.reference.named_parameters()} <= ignored
    assert not any(name.startswith("policy.") for name in ignored)
    assert frozen_models(grpo_module(beta=0)) == {}  # beta = 0: no reference


def test_one_device_and_deepspeed_need_no_change():
    module = grpo_module()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    for strategy in ("auto", DeepSpeedStrategy(stage=3)):
        adapter_for(strategy).configure(module, strategy)
    assert not hasattr(module, "_ddp_params_and_buffers_to_ignore")
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_fsdp_wraps_each_decoder_layer(arch):
    model, _ = tiny_lm(family=arch, num_layers=3)
    layers = decoder_layers(model)
    assert layers == list(model.model.layers)


def test_full_state_dict_and_export_from_one_process(tmp_path):
    model, tokenizer = tiny_lm(seed=2)
    state = full_state_dict(model)
    assert state["lm_head.weight"] is state["model.embed_tokens.weight"]  # tied weights stay one tensor
    export_pretrained(model, tokenizer, tmp_path, is_global_zero=True)
    loaded = type(model).from_pretrained(tmp_path)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], value)


# ---------------------------------------------------------------- the command line of a rank Lightning launches
JOB = {"overrides": ["strategy=ddp", "grpo.beta=0"], "config_name": "train", "output_dir": "/runs/multirun/t/0_beta=0,x='y'"}


def test_launched_rank_runs_its_job_not_the_sweep():
    argv = ["/repo/train.py", "-m", "strategy=ddp", "grpo.beta=0,0.04", 'hydra.run.dir="outputs/runs/t"', "hydra.job.name=train_ddp_process_1"]
    env = {JOB_ENV: json.dumps(JOB), "LOCAL_RANK": "1"}
    assert launched_rank_argv(argv, env) == [
        "/repo/train.py",
        "--config-name=train",
        "strategy=ddp",
        "grpo.beta=0",
        "hydra.run.dir='/runs/multirun/t/0_beta=0,x=\\'y\\''",
        "hydra.output_subdir=null",
        "hydra.job.name=train_ddp_process_1",
    ]


def test_launched_rank_keeps_the_config_location():
    argv = ["train.py", "-cp", "/elsewhere/conf", "--config-dir=/more", "-m", "grpo.beta=0,1"]
    out = launched_rank_argv(argv, {JOB_ENV: json.dumps(JOB), "LOCAL_RANK": "3"})
    assert out[1:4] == ["-cp", "/elsewhere/conf", "--config-dir=/more"] and "-m" not in out


@pytest.mark.parametrize("env", [{}, {"LOCAL_RANK": "1"}, {JOB_ENV: json.dumps(JOB)}, {JOB_ENV: json.dumps(JOB), "LOCAL_RANK": "0"}])
def test_other_processes_keep_their_command_line(env):
    """Rank 0, and ranks started by torchrun or SLURM (no job recorded by a parent), run what they were given."""
    argv = ["train.py", "-m", "grpo.beta=0,1"]
    assert launched_rank_argv(argv, env) == argv


def test_hydra_quoting_round_trips():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    value = launched_rank_argv(["t.py"], {JOB_ENV: json.dumps(JOB), "LOCAL_RANK": "1"})[-3]
    parsed = OverridesParser.create().parse_override(value)
    assert parsed.value() == JOB["output_dir"]
