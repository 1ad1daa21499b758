"""Fine-tune a causal LM with GRPO.

    python train.py                                   # built-in default: tiny model, arithmetic, CPU
    python train.py supervision=process kl=k1 grpo.beta=0
    python train.py -m grpo.group_size=4,8 grpo.beta=0,0.04     # one output folder per job
    python train.py ckpt_path=outputs/runs/<run>/checkpoints/last.ckpt   # exact resume (any file there)

Returns the held-out greedy accuracy after training (the metric a sweep optimises). A run stopped by
invalid settings leaves no run folder behind (Hydra creates it before the settings are checked).
"""

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

HYDRA_CONFIG_FILES = {"config.yaml", "hydra.yaml", "overrides.yaml"}  # what Hydra writes to .hydra/ before the job


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float:
    from grpo.checks import ConfigError
    from grpo.launch import hydra_job_scope
    from grpo.pipeline import run

    try:
        with hydra_job_scope():  # multi-process strategies under -m: each job launches its own processes, for itself
            return run(cfg)
    except (ConfigError, FileNotFoundError):  # invalid settings, or a ckpt_path / data file that is not there
        remove_unused_run_dir()
        raise


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


if __name__ == "__main__":
    from grpo.launch import launched_rank_argv

    sys.argv = launched_rank_argv(sys.argv)  # unchanged except in processes Lightning launched for a Hydra job
    main()
