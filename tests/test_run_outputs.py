"""What a run leaves on disk, read back the way a user meets it.

- End of run: every run's `final/*` and `initial/*` scalars and its HPARAMS summary are in its TensorBoard
  event files, and `tb/hparams.yaml` holds its settings, for consecutive runs in one process and for the
  jobs of a real `python train.py -m` sweep (read after the process has exited).
- Checkpoints: every file a run writes can be given back as `ckpt_path=<path>` through Hydra's override
  parser, unquoted, and the run resumes from it; what save_top_k=1 leaves after resuming in place.
- Invalid settings: `python train.py` stops before writing, and leaves no run folder behind (but never
  removes a folder that holds an earlier run's files).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import OverrideParseException

from grpo.pipeline import _flat_hparams, run
from grpo_testkit import REPO, compose_config, read_scalars

# One GRPO step on a few held-out questions: a run in a couple of seconds.
SHORT = ["grpo.steps=1", "eval.prompts=4", "eval.batch_size=4", "eval.k_prompts=2", "sampling.max_new_tokens=8"]


def held_out(prefix: str, cfg) -> set[str]:
    return {f"{prefix}/accuracy", f"{prefix}/pass@{cfg.eval.k}", f"{prefix}/maj@{cfg.eval.k}"}


def hparams_session(tb_dir: Path) -> dict:
    """The settings of the HPARAMS summary in a run's event files ({} if there is none), as Python values."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = EventAccumulator(str(tb_dir), size_guidance={"tensors": 0})
    acc.Reload()
    try:
        content = acc.PluginTagToContent("hparams")
    except KeyError:  # no hparams summary at all
        return {}
    if "_hparams_/session_start_info" not in content or "_hparams_/experiment" not in content:
        return {}
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    return {name: getattr(value, value.WhichOneof("kind")) for name, value in start.hparams.items()}


def open_event_writers(under: Path) -> list[str]:
    """Folders under `under` with a TensorBoard event writer still open in this process.

    What such a writer still holds is written by its background thread some time later, or never if the
    process ends first (a run's last events, at the end of a sweep).
    """
    import gc

    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    writers = [obj for obj in gc.get_objects() if type(obj) is EventFileWriter]  # type(): isinstance would touch lazy proxies
    return [w.get_logdir() for w in writers if not w._async_writer._closed and Path(w.get_logdir()).is_relative_to(under)]


def check_run_on_disk(out: Path, cfg, with_initial: bool = True) -> None:
    """`out`'s TensorBoard files hold final/* (and initial/*) and an HPARAMS summary; hparams.yaml = cfg's settings."""
    expected = _flat_hparams(cfg)
    scalars = read_scalars(out / "tb")
    want = held_out("final", cfg) | (held_out("initial", cfg) if with_initial else set())
    assert want <= set(scalars), f"{out}: missing {sorted(want - set(scalars))}"
    assert scalars["final/accuracy"][-1][1] == pytest.approx(scalars["val/accuracy"][-1][1])
    session = hparams_session(out / "tb")
    assert session, f"{out}: no HPARAMS summary in the event files"
    assert session["grpo.group_size"] == expected["grpo.group_size"]
    saved = yaml.safe_load((out / "tb" / "hparams.yaml").read_text())
    assert saved == expected, f"{out}: hparams.yaml differs from the run's settings"


# ---- end-of-run metrics and hparams ----------------------------------------------------------------
def test_consecutive_runs_all_keep_final_metrics_and_hparams(base_overrides, tmp_path):
    """10 runs one after another in one process (as a sweep's jobs run), each read back after all ran."""
    runs = []
    for i in range(10):
        cfg = compose_config(base_overrides + SHORT + [f"grpo.group_size={2 + i % 3}", f"seed={i}"], output_dir=tmp_path / f"run{i}")
        runs.append((cfg, run(cfg)))
    assert open_event_writers(tmp_path) == []  # each run closed what it wrote last
    for i, (cfg, accuracy) in enumerate(runs):
        out = tmp_path / f"run{i}"
        assert _flat_hparams(cfg)["grpo.group_size"] == 2 + i % 3 and _flat_hparams(cfg)["seed"] == i
        check_run_on_disk(out, cfg)
        assert read_scalars(out / "tb")["final/accuracy"][-1][1] == pytest.approx(accuracy)


def test_hparams_yaml_holds_plain_values(base_overrides, tmp_path):
    cfg = compose_config(base_overrides + SHORT, output_dir=tmp_path)
    run(cfg)
    saved = yaml.safe_load((tmp_path / "tb" / "hparams.yaml").read_text())
    assert saved["grpo.minibatch_prompts"] is None and saved["grpo.group_size"] == cfg.grpo.group_size
    assert saved["grpo.steps"] == 1 and saved["seed"] == cfg.seed
    assert not any(key.split(".")[-1].startswith("_") for key in saved)  # no _target_ and the like


def _subprocess_env() -> dict:
    env = dict(os.environ)
    threads = env.get("GRPO_TEST_THREADS", "1")  # as tests/conftest.py does in-process
    env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    return env


@pytest.mark.slow
def test_sweep_jobs_all_keep_final_metrics_and_hparams(warm_cache, tmp_path):
    """A real `python train.py -m` sweep, read after the process exited.

    Its jobs run one after another in one process; before the fix the last job's final metrics and HPARAMS
    were still queued in an unclosed event writer when the process ended, and were lost. Its overrides make
    Hydra's job folder name longer than a file name may be (it died with `OSError: File name too long`
    before the job started): the default subdir cuts the name and ends it with a hash (grpo.job_dirname).
    """
    sweep = tmp_path / "sweep"
    # the defaults, written out: together with the rest they name a job folder past 255 bytes
    many = ["grpo.beta=0.04", "grpo.epsilon=0.2", "sampling.temperature=1.0", "sampling.top_p=1.0", "grpo.scale_rewards=true",
            "grpo.mask_truncated=false", "module.log_samples=4", "eval.every_n_steps=50", "grpo.min_spread=0.0"]
    cmd = [
        sys.executable, str(REPO / "train.py"), "-m", "grpo.group_size=2,3,4", "debug=default", *SHORT, *many,
        f"model.cache_dir={warm_cache}", f"hydra.sweep.dir={sweep}",
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=tmp_path, env=_subprocess_env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    names = sorted((p.name for p in sweep.iterdir() if p.is_dir()), key=lambda name: int(name.split("_")[0]))
    assert len(names) == 3 and len(set(names)) == 3, names
    assert all(len(name.encode()) <= 200 and name.split("+hash:")[-1].isalnum() for name in names), names  # cut, hashed
    assert names[0].startswith("0_debug:default+eval.") and "+hash:" in names[0]
    jobs = [sweep / name for name in names]
    assert all((job / "tb").is_dir() for job in jobs), names
    for size, job in zip((2, 3, 4), jobs):
        config = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())
        assert config["grpo"]["group_size"] == size
        check_run_on_disk(job, compose_config(["debug=default", *SHORT, *many, f"grpo.group_size={size}", f"model.cache_dir={warm_cache}"], output_dir=job))


# ---- checkpoint names on the command line ----------------------------------------------------------
CKPT = SHORT + ["grpo.steps=2", "callbacks.model_checkpoint.every_n_epochs=1"]


def parsed_ckpt_path(path: Path) -> str:
    """`ckpt_path=<path>` as Hydra's command-line parser reads it (raises on what a shell user would have to quote)."""
    (override,) = OverridesParser.create().parse_overrides([f"ckpt_path={path}"])
    assert not override.is_sweep_override()
    return override.value()


@pytest.fixture(scope="module")
def checkpointed(base_overrides, tmp_path_factory) -> Path:
    """A 2-step run that keeps a checkpoint after every step (save_top_k=-1)."""
    out = tmp_path_factory.mktemp("checkpointed")
    run(compose_config(base_overrides + CKPT + ["callbacks.model_checkpoint.save_top_k=-1"], output_dir=out))
    return out


def test_every_checkpoint_name_passes_hydras_override_parser(checkpointed):
    names = sorted(p.name for p in (checkpointed / "checkpoints").iterdir())
    assert names == ["epoch0000-step000001.ckpt", "epoch0001-step000002.ckpt", "last.ckpt"]
    for name in names:
        path = checkpointed / "checkpoints" / name
        assert parsed_ckpt_path(path) == str(path)
        assert compose_config([f"ckpt_path={path}"]).ckpt_path == str(path)
    with pytest.raises(OverrideParseException):  # Lightning's default name, which this replaces
        parsed_ckpt_path(checkpointed / "checkpoints" / "epoch=0-step=1.ckpt")


def test_resume_from_a_step_checkpoint_given_as_an_override(base_overrides, checkpointed, tmp_path):
    ckpt = checkpointed / "checkpoints" / "epoch0000-step000001.ckpt"  # after step 1 of 2
    cfg = compose_config(base_overrides + CKPT + [f"ckpt_path={parsed_ckpt_path(ckpt)}"], output_dir=tmp_path)
    assert cfg.ckpt_path == str(ckpt)
    run(cfg)
    full, resumed = read_scalars(checkpointed / "tb"), read_scalars(tmp_path / "tb")
    assert len(full["rollout/reward_mean"]) == 2
    assert len(resumed["rollout/reward_mean"]) == 1  # only the missing second step
    for tag in ("rollout/reward_mean", "rollout/completion_len", "train/loss"):
        assert resumed[tag][-1][0] == full[tag][-1][0], tag  # at the same global step
        assert resumed[tag][-1][1] == pytest.approx(full[tag][-1][1], rel=1e-5, abs=1e-7), tag
    check_run_on_disk(tmp_path, cfg, with_initial=False)  # a resumed run has no "before"
    assert not held_out("initial", cfg) & set(resumed)


def test_save_top_k_1_after_resuming_in_place(base_overrides, tmp_path):
    """save_top_k=1 keeps the latest step checkpoint; Lightning never deletes the one a run resumed from.

    Resuming in place from last.ckpt leaves one step checkpoint. Resuming from a step checkpoint keeps that
    file as well (ModelCheckpoint._should_remove_checkpoint spares the resume path, and the callback then
    no longer tracks it), so the folder holds two until it is deleted by hand.
    """
    ckpts = tmp_path / "checkpoints"

    def resume(steps, ckpt=None):
        extra = [f"grpo.steps={steps}"] + ([f"ckpt_path={parsed_ckpt_path(ckpt)}"] if ckpt else [])
        run(compose_config(base_overrides + CKPT + extra, output_dir=tmp_path))
        return sorted(p.name for p in ckpts.iterdir())

    assert resume(2) == ["epoch0001-step000002.ckpt", "last.ckpt"]
    assert resume(3, ckpts / "last.ckpt") == ["epoch0002-step000003.ckpt", "last.ckpt"]
    assert resume(4, ckpts / "epoch0002-step000003.ckpt") == ["epoch0002-step000003.ckpt", "epoch0003-step000004.ckpt", "last.ckpt"]
    assert resume(5, ckpts / "last.ckpt") == ["epoch0002-step000003.ckpt", "epoch0004-step000005.ckpt", "last.ckpt"]


# ---- invalid settings leave nothing behind ---------------------------------------------------------
def train_cli(*overrides: str, cwd: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(REPO / "train.py"), *overrides]
    return subprocess.run(cmd, cwd=cwd, env=_subprocess_env(), capture_output=True, text=True, timeout=300)


def test_invalid_settings_leave_no_run_folder(tmp_path):
    done = train_cli("grpo.group_size=1", f"hydra.run.dir={tmp_path / 'x'}", cwd=tmp_path)
    assert done.returncode != 0
    assert "grpo.group_size=1" in done.stderr  # the message names the setting
    assert not (tmp_path / "x").exists(), sorted(p.name for p in (tmp_path / "x").rglob("*"))
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing else written either (no outputs/)


@pytest.mark.parametrize("with_checkpoint", [True, False], ids=["checkpoint-and-log", "log-only"])
def test_invalid_settings_keep_a_folder_that_holds_an_earlier_run(tmp_path, with_checkpoint):
    earlier = tmp_path / "x"
    (earlier / ".hydra").mkdir(parents=True)
    (earlier / "train.log").write_text("an earlier run's log\n")  # e.g. a run that stopped during its warm start
    if with_checkpoint:
        (earlier / "checkpoints").mkdir()
        (earlier / "checkpoints" / "last.ckpt").write_bytes(b"an earlier run's checkpoint")
    done = train_cli("grpo.group_size=1", f"hydra.run.dir={earlier}", cwd=tmp_path)
    assert done.returncode != 0 and "grpo.group_size=1" in done.stderr
    assert (earlier / "train.log").read_text().startswith("an earlier run's log\n")
    if with_checkpoint:
        assert (earlier / "checkpoints" / "last.ckpt").read_bytes() == b"an earlier run's checkpoint"
