"""Running policy-written Python (hostile input) in a separate, limited process: `run_python(code, limits)`.

What each call gets:
- a separate process (this interpreter, `python -I -u`: no user site, no PYTHON* variables, unbuffered), in a new
  session, its code on stdin, killed with the trainer (PR_SET_PDEATHSIG); a new network namespace with no interfaces
  (`unshare --net`) where the OS allows it (probed once per process; as root on Linux it does);
- a fresh temporary working directory (also its HOME and TMPDIR), removed afterwards, and an environment of a few
  fixed variables (PATH, LANG, HOME, TMPDIR, *_NUM_THREADS=1): nothing of the trainer's environment;
- limits: `timeout_s` wall-clock seconds (then SIGKILL to the whole process group), `cpu_s` CPU seconds (RLIMIT_CPU),
  `memory_mb` of address space (RLIMIT_AS: an allocation past it is a MemoryError), `file_mb` per written file
  (RLIMIT_FSIZE), no core files, 64 open files, RLIMIT_NPROC = 0;
- an audit hook (grpo.tools.sandbox_child), installed before the code runs, that refuses: fork / exec / spawn /
  system / subprocess (and _posixsubprocess.fork_exec, which raises no event, is replaced), signals to other
  processes, every socket call and the import of socket, _posixsubprocess, cffi and multiprocessing, every ctypes
  call, raising resource limits, writing, removing, renaming, chmod-ing or creating anything outside the working
  directory (and *at() calls with a dir_fd), reading or listing files outside the working directory and the
  interpreter's own directories (its prefix and sys.path); os.mknod / os.mkfifo (no audit event) are removed;
- its output (stdout and stderr together) read up to `max_output_chars`: past that the process is killed and the text
  truncated (the trainer never holds more than that in memory).

What it does NOT stop. The hook runs inside the hostile process: a CPython audit hook is not a security boundary
against a determined attacker (PEP 578 says so: code can reach interpreter internals, and C code, such as an
installed native extension or an interpreter bug, is not audited at all). When the trainer runs as root (as on this
project's machines), root is exempt from RLIMIT_NPROC and from file permissions, so the process and file rules are
the hook's alone; only the network namespace, the resource limits, the process-group kill and the temporary folder
are the kernel's. The code may read what the interpreter's directories hold, use CPU and memory up to its limits,
and fill its temporary folder (`file_mb` per file, for at most `timeout_s`); a trainer killed with SIGKILL leaves that
folder behind. For untrusted code at scale, run the rollouts in a container or VM (gVisor, Firecracker, nsjail) and
treat this as the inner fence. It is built for policy-written arithmetic and algebra (math, fractions, sympy).
"""

from __future__ import annotations

import functools
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

CHILD = str(Path(__file__).with_name("sandbox_child.py"))


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 5.0  # wall-clock seconds per call
    cpu_s: int = 2  # CPU seconds per call (RLIMIT_CPU)
    memory_mb: int = 512  # address space (RLIMIT_AS), MB
    file_mb: int = 1  # largest file the code may write (RLIMIT_FSIZE), MB
    max_output_chars: int = 2000  # printed output kept (stdout and stderr together)

    def __post_init__(self):
        for name in ("timeout_s", "cpu_s", "memory_mb", "file_mb", "max_output_chars"):
            if not getattr(self, name) > 0:
                raise ValueError(f"tools python: {name}={getattr(self, name)!r} must be > 0 (set it in conf/tools/python.yaml)")


@functools.cache
def network_namespace() -> list[str]:
    """["unshare", "--net"] when this machine lets us make an empty network namespace, else [] (the hook alone)."""
    unshare = shutil.which("unshare")
    if unshare is None or sys.platform != "linux":
        return []
    try:
        ok = subprocess.run([unshare, "--net", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        ok = False
    return [unshare, "--net"] if ok else []


def environment(workdir: str) -> dict[str, str]:
    threads = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")}
    return {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": workdir, "TMPDIR": workdir, **threads}


def run_python(code: str, limits: Limits) -> tuple[str, bool]:
    """(output, error) of `code` run as a notebook cell under `limits`; never raises for anything the code does."""
    workdir = tempfile.mkdtemp(prefix="grpo-python-")
    error_read, error_write = os.pipe()
    try:
        command = [*network_namespace(), sys.executable, "-I", "-u", CHILD, workdir, str(limits.cpu_s),
                   str(limits.memory_mb), str(limits.file_mb), str(error_write)]
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   cwd=workdir, env=environment(workdir), pass_fds=(error_write,), start_new_session=True)
        os.close(error_write)
        error_write = -1
        try:
            process.stdin.write(code.encode("utf-8", "replace"))
            process.stdin.close()
        except BrokenPipeError:
            pass
        output, over, timed_out = _read_output(process, limits)
        _kill_group(process)
        process.wait()
        process.stdout.close()
        error_line = _read_small(error_read)
    finally:
        for fd in (error_read, error_write):
            if fd >= 0:
                os.close(fd)
        shutil.rmtree(workdir, ignore_errors=True)
    text = output[: limits.max_output_chars]
    if over:
        return text + f"\n... OutputLimit: output truncated at {limits.max_output_chars} characters", True
    if timed_out:
        return _join(text, f"TimeoutError: the code ran past its {limits.timeout_s:g} s time limit"), True
    code_ = process.returncode
    if code_ == 0:
        return text, False
    if code_ in (-signal.SIGXCPU, -signal.SIGKILL):
        return _join(text, f"TimeoutError: the code used its {limits.cpu_s} s of CPU time"), True
    if code_ == -signal.SIGXFSZ:
        return _join(text, f"OSError: a file past the {limits.file_mb} MB file size limit"), True
    if code_ < 0:
        return _join(text, f"Killed by signal {signal.Signals(-code_).name}"), True
    return _join(text, error_line or f"Exited with status {code_}"), True


def _join(output: str, error: str) -> str:
    return f"{output.rstrip()}\n{error}" if output.strip() else error


def _read_output(process: subprocess.Popen, limits: Limits) -> tuple[str, bool, bool]:
    """(decoded output, over the character limit, past the wall-clock limit): reads until EOF and exit, the deadline
    or the limit (at most 4 bytes a character), whichever comes first."""
    deadline = time.monotonic() + limits.timeout_s
    cap = 4 * limits.max_output_chars + 4
    fd, chunks, size = process.stdout.fileno(), [], 0
    poller = select.poll()  # not select.select: a trainer may hold more than 1024 descriptors
    poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return _decode(chunks), False, True
        if not poller.poll(max(1, int(remaining * 1000))):
            continue
        data = os.read(fd, 65536)
        if not data:
            break
        chunks.append(data)
        size += len(data)
        text = _decode(chunks) if size > limits.max_output_chars else ""
        if len(text) > limits.max_output_chars or size > cap:
            return text, True, False
    try:  # EOF: the process closed its output; it has what is left of the deadline to exit
        process.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        return _decode(chunks), False, True
    return _decode(chunks), False, False


def _decode(chunks: list[bytes]) -> str:
    return b"".join(chunks).decode("utf-8", "replace")


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)  # the session it leads: the process and anything it started
    except (ProcessLookupError, PermissionError):
        pass


def _read_small(fd: int, limit: int = 4096) -> str:
    os.set_blocking(fd, False)
    try:
        return os.read(fd, limit).decode("utf-8", "replace").strip()
    except BlockingIOError:
        return ""
