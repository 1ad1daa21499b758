"""A sweep job's folder name that the file system accepts: `hydra.sweep.subdir` in conf/train.yaml.

Hydra names a job's folder after its overrides (`0_grpo.beta:0.04+seed...`); a sweep over many settings writes
names past the file system's 255-byte limit, and the job dies with `OSError: File name too long` before it
starts. `${grpo_job_dirname:${hydra.job.num},${hydra.job.override_dirname}}` keeps the name as Hydra makes it when
it fits, and otherwise cuts it and ends it with a hash of the whole, so that jobs stay apart and the name still
says what it holds (the full overrides are in the job's .hydra/overrides.yaml, which scripts/results.py reads).
"""

from __future__ import annotations

import hashlib

from omegaconf import OmegaConf

MAX_BYTES = 200  # under the 255 of ext4, xfs, btrfs, APFS and NTFS, with room for the `.<n>` some tools append
RESOLVER = "grpo_job_dirname"


def job_dirname(num, override_dirname: str) -> str:
    name = f"{num}_{override_dirname}"
    if len(name.encode()) <= MAX_BYTES:
        return name
    digest = hashlib.sha1(override_dirname.encode()).hexdigest()[:12]
    head = name.encode()[: MAX_BYTES - len(digest) - 6].decode(errors="ignore")  # whole characters only
    return f"{head}+hash:{digest}"  # characters that pass unquoted to ckpt_path=... like the rest


def register() -> None:
    """Make the resolver known to OmegaConf (once per process; the config's subdir uses it)."""
    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, job_dirname)
