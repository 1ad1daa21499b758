"""Fine-tune a causal LM with GRPO.

    python train.py                                   # built-in default: tiny model, arithmetic, CPU
    python train.py supervision=process kl=k1 grpo.beta=0
    python train.py -m grpo.group_size=4,8 grpo.beta=0,0.04     # one output folder per job
    python train.py ckpt_path=outputs/runs/<run>/checkpoints/last.ckpt   # exact resume (any file there)

Returns the held-out greedy accuracy after training (the metric a sweep optimises). A run stopped by
invalid settings leaves no run folder behind (Hydra creates it before the settings are checked).
"""

import os
import sys

import hydra
from omegaconf import DictConfig

from grpo.job_dirname import register as register_job_dirname

register_job_dirname()  # before Hydra reads conf/train.yaml's hydra.sweep.subdir


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float:
    from grpo.checks import ConfigError
    from grpo.launch import hydra_job_scope, remove_unused_run_dir
    from grpo.pipeline import run

    try:
        with hydra_job_scope():  # multi-process strategies under -m: each job launches its own processes, for itself
            return run(cfg)
    except (ConfigError, FileNotFoundError):  # invalid settings, or a ckpt_path / data file that is not there
        remove_unused_run_dir()
        raise


if __name__ == "__main__":
    from grpo.launch import launched_rank_argv

    sys.path.insert(1, os.getcwd())  # your own task / reward modules in the folder you run from (_target_=mymodule.X)
    sys.argv = launched_rank_argv(sys.argv)  # unchanged except in processes Lightning launched for a Hydra job
    main()
