"""Things built once and cached on disk (the warm-started policy, the initial reward model): one process
builds (other ranks and parallel sweep jobs wait on a file lock), into a temporary folder renamed into
place at the end, so a crash mid-way never leaves a half-written cache."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

from filelock import FileLock


def build_once(path: Path, done_marker: str, build: Callable[[Path], None]) -> Path:
    """`path`, built by `build(tmp_dir)` unless `path / done_marker` already exists."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if not (path / done_marker).exists():
            tmp = path.with_name(path.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            build(tmp)
            os.replace(tmp, path)
    return path
