"""Hydra jobs: the processes Lightning launches for one (multi-process strategies, also under `-m`), and the
folder of one that stopped before it started.

- `hydra_job_scope()`: wraps one Hydra job's run so each job of a sweep launches its own processes.
- `launched_rank_argv(argv)`: the command line such a process runs: its job, as a single run
  (Lightning replays the whole command line, so under `-m` rank 1 would replay the sweep into a
  second folder).
- `remove_unused_run_dir()`: a run refused for its settings leaves no folder behind.
"""

from __future__ import annotations

import json
import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

JOB_ENV = "GRPO_HYDRA_JOB"  # set inside a Hydra job (hydra_job_scope); inherited by the processes Lightning launches
_CONFIG_FLAGS = ("--config-path", "-cp", "--config-dir", "-cd")
# Hydra overrides a launched rank needs to compose and run the job as rank 0 did (not the sweep's or launcher's)
_FORWARDED_HYDRA = ("hydra.searchpath", "hydra.job.", "hydra.verbose", "hydra/job_logging", "hydra/hydra_logging", "hydra.job_logging", "hydra.hydra_logging")


_LAUNCH_ENV = ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", JOB_ENV)


@contextmanager
def hydra_job_scope() -> Iterator[None]:
    """Wrap one Hydra job's run (inside the @hydra.main function) so that multi-process strategies work under `-m`.

    On entry: record the job (task overrides, config name, output folder) for the processes Lightning
    is about to launch (`launched_rank_argv`). On exit, in the process that launched them and in each of
    them: destroy the process group (left to interpreter exit, gloo can abort the process after the run
    finished). In the launching process also drop the variables Lightning set, so the sweep's next job launches its own
    processes (Lightning would otherwise take LOCAL_RANK=0 as "launched externally" and talk to the
    finished job's processes). Under torchrun or SLURM (processes created outside) it changes nothing.
    """
    from hydra.core.hydra_config import HydraConfig

    launcher_here = "LOCAL_RANK" not in os.environ
    launched_here = JOB_ENV in os.environ and os.environ.get("LOCAL_RANK", "0") != "0"  # a rank Lightning launched for this job
    saved = {key: os.environ.get(key) for key in _LAUNCH_ENV}
    if HydraConfig.initialized():
        hc = HydraConfig.get()
        hydra_overrides = [o for o in hc.overrides.hydra if o.startswith(_FORWARDED_HYDRA) and not o.startswith("hydra.job.name")]
        os.environ[JOB_ENV] = json.dumps(
            {"overrides": [*hydra_overrides, *hc.overrides.task], "config_name": hc.job.config_name, "output_dir": hc.runtime.output_dir}
        )
    try:
        yield
    finally:
        if (launcher_here or launched_here) and torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()  # left to interpreter exit, gloo can abort the process
        if launcher_here:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def launched_rank_argv(argv: list[str], environ=os.environ) -> list[str]:
    """The command line a process Lightning launched (LOCAL_RANK > 0) should run: rank 0's job, as a single run.

    Lightning re-runs the script with the launching command line plus `hydra.run.dir=...`; under
    `-m` that replays the whole sweep (into a second folder, with jobs that wait on ranks that
    never come). Here it becomes: the job's own overrides, its output folder as run dir, no config
    copy (rank 0 wrote it). Anything else (rank 0 itself, torchrun, SLURM) keeps `argv` as is.
    """
    job = environ.get(JOB_ENV)
    if not job or environ.get("LOCAL_RANK", "0") == "0":
        return argv
    job = json.loads(job)
    keep = []  # config location flags (-cp/-cd DIR, --config-path=DIR), as given
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg in _CONFIG_FLAGS and i + 1 < len(argv):
            keep += argv[i : i + 2]
            i += 1
        elif arg.split("=", 1)[0] in _CONFIG_FLAGS:
            keep.append(arg)
        i += 1
    return [
        argv[0],
        *keep,
        f"--config-name={job['config_name']}",
        *job["overrides"],
        f"hydra.run.dir={_quoted(job['output_dir'])}",
        "hydra.output_subdir=null",
        f"hydra.job.name=train_ddp_process_{environ['LOCAL_RANK']}",
    ]


def _quoted(value: str) -> str:
    """A Hydra override value that stays one string (output folders contain '=' and ',')."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


HYDRA_CONFIG_FILES = {"config.yaml", "hydra.yaml", "overrides.yaml"}  # what Hydra writes to .hydra/ before the job


def remove_unused_run_dir() -> bool:
    """Remove this job's output folder if it holds nothing but what Hydra wrote before the job started.

    That is `.hydra/` with Hydra's three config copies and an empty job log. Only those files are
    deleted, one by one, and the folders with `rmdir`, so a folder that holds anything else (an
    earlier run's checkpoints, logs, TensorBoard files, a non-empty log) is left as it is.
    Returns whether the folder is gone.
    """
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return False
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    config_dir = run_dir / hc.output_subdir if hc.output_subdir is not None else None
    loggers = [logging.getLogger(), *[lg for lg in list(logging.root.manager.loggerDict.values()) if isinstance(lg, logging.Logger)]]
    log_handlers = {
        h for logger in loggers for h in logger.handlers if isinstance(h, logging.FileHandler) and Path(h.baseFilename).parent == run_dir
    }
    logs = {Path(h.baseFilename).name for h in log_handlers}
    try:
        entries = {p.name for p in run_dir.iterdir()}
        if not entries <= logs | ({config_dir.name} if config_dir else set()):
            return False
        if any(run_dir.joinpath(name).stat().st_size > 0 for name in entries & logs):
            return False  # something was logged: keep it
        if config_dir is not None and config_dir.exists():
            if not {p.name for p in config_dir.iterdir()} <= HYDRA_CONFIG_FILES:
                return False
    except OSError:
        return False

    for handler in log_handlers:  # detach before deleting: a later record would re-create the file
        for logger in loggers:
            logger.removeHandler(handler)
        handler.close()
    files = [run_dir / name for name in logs] + ([config_dir / name for name in HYDRA_CONFIG_FILES] if config_dir else [])
    for path in files:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
    try:
        if config_dir is not None and config_dir.exists():
            config_dir.rmdir()
        run_dir.rmdir()  # fails, and keeps the folder, if anything else appeared in it
    except OSError:
        return False
    return True
