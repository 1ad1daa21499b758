"""The strategies on CUDA GPUs (skipped without one). scripts/gpu_smoke.sh runs the fuller check (resume, a
sweep) and prints a report; this is the part that runs in pytest wherever CUDA is present."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from distributed_testkit import SIGNAL, parameters, run_python, train, warm_start

GPUS = torch.cuda.device_count() if torch.cuda.is_available() else 0
DEVICES = min(2, GPUS)
WORKER = Path(__file__).with_name("equivalence_worker.py")
pytestmark = [pytest.mark.slow, pytest.mark.multiprocess, pytest.mark.skipif(GPUS == 0, reason="needs a CUDA GPU")]


@pytest.mark.parametrize("strategy", ["ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3"])
def test_strategy_trains_and_exports_on_gpu(strategy, base_overrides, warm_cache, tmp_path):
    out = tmp_path / "run"
    train([f"strategy={strategy}", "trainer.accelerator=gpu", f"trainer.devices={DEVICES}", *base_overrides, *SIGNAL, f"hydra.run.dir={out}"], tmp_path)
    start, final = parameters(warm_start(warm_cache)), parameters(out / "export")
    assert all(final[k].shape == start[k].shape for k in start)
    assert any(not torch.equal(final[k], start[k]) for k in start)


@pytest.mark.skipif(GPUS < 2, reason="needs 2 GPUs")
@pytest.mark.parametrize("strategy", ["ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3"])
def test_two_gpus_update_like_one(strategy, tmp_path):
    results = {}
    for name, devices in (("auto", 1), (strategy, 2)):
        run_python([str(WORKER), name, str(devices), str(tmp_path / f"{name}.pt"), "gpu"], tmp_path)
        results[name] = torch.load(tmp_path / f"{name}.pt", weights_only=False)
    one, two = results["auto"], results[strategy]
    for name, value in one["policy"].items():
        torch.testing.assert_close(two["policy"][name], value, rtol=1e-4, atol=1e-5)
    assert two["metrics"]["train/loss"] == pytest.approx(one["metrics"]["train/loss"], rel=1e-4)
    assert two["reference_frozen"] and two["copied"] and two["stayed_gathered"]
