"""The child side of grpo.tools.sandbox: run as `python -I -u sandbox_child.py <workdir> <cpu_s> <memory_mb> <file_mb> <error_fd>`
with the code on stdin. Not imported by the trainer; see grpo.tools.sandbox for what this does and does not stop.

In order: ask to be killed with the parent (PR_SET_PDEATHSIG); read the code; set the resource limits (CPU seconds,
address space, file size, no core files, few open files, no processes); replace _posixsubprocess.fork_exec; remove
the few file-creating calls that raise no audit event (os.mknod, os.mkfifo); install the audit hook (`guard`); run the
code like a notebook cell (the value of a final bare expression is printed as its repr). A failure writes one short
line (the last line of the traceback) to `error_fd` and exits with status 1.
"""

import ast
import os
import resource
import sys

FORBIDDEN_EVENTS = (  # exact audit event names, refused whatever their arguments
    "os.fork", "os.forkpty", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.startfile", "subprocess.Popen",
    "os.kill", "os.killpg", "signal.pthread_kill", "resource.setrlimit", "resource.prlimit", "gc.get_objects",
    "gc.get_referrers", "gc.get_referents", "sys._current_frames", "os.chroot", "os.setuid", "os.setgid",
    "winreg.OpenKey", "webbrowser.open", "urllib.Request", "ftplib.connect", "smtplib.connect", "nntplib.connect",
    "poplib.connect", "imaplib.open", "telnetlib.Telnet.open", "http.client.connect",
)
FORBIDDEN_PREFIXES = ("socket.", "ctypes.", "_ctypes.", "cffi.", "syslog.", "sqlite3.", "mmap.")
FORBIDDEN_IMPORTS = {"_posixsubprocess", "cffi", "_cffi_backend", "multiprocessing", "_multiprocessing",
                     "socket", "_socket", "ssl", "_ssl", "pty"}
# mutating file events: (indexes of path arguments that must lie in the working directory, indexes of dir_fd arguments)
MUTATING = {
    "os.remove": ((0,), (1,)), "os.rmdir": ((0,), (1,)), "os.mkdir": ((0,), (2,)), "os.rename": ((0, 1), (2, 3)),
    "os.link": ((0, 1), (2, 3)), "os.symlink": ((1,), (2,)), "os.chmod": ((0,), (2,)), "os.chown": ((0,), (3,)),
    "os.utime": ((0,), (3,)), "os.truncate": ((0,), ()), "os.chflags": ((0,), ()), "os.lchflags": ((0,), ()),
    "os.setxattr": ((0,), ()), "os.removexattr": ((0,), ()), "shutil.rmtree": ((0,), (1,)), "shutil.move": ((0, 1), ()),
    "shutil.copyfile": ((1,), ()), "shutil.copymode": ((1,), ()), "shutil.copystat": ((1,), ()),
    "shutil.copytree": ((1,), ()), "shutil.chown": ((0,), ()), "shutil.unpack_archive": ((1,), ()),
    "shutil.make_archive": ((0,), ()),
}
LISTING = {"os.listdir", "os.scandir", "glob.glob", "glob.glob/2"}
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def inside(path, roots) -> bool:
    real = os.path.realpath(os.fsdecode(path))
    return any(real == root or real.startswith(root.rstrip(os.sep) + os.sep) for root in roots)


def make_guard(workdir: str, readable: tuple):
    """The audit hook: refuses processes, signals, sockets, native code loading, raising limits, writes outside `workdir`
    and reads outside `readable` (the interpreter's own files and `workdir`)."""
    writable = (workdir,)
    forbidden_events, forbidden_imports = frozenset(FORBIDDEN_EVENTS), frozenset(FORBIDDEN_IMPORTS)
    forbidden_prefixes = FORBIDDEN_PREFIXES
    mutating, listing, write_flags = dict(MUTATING), frozenset(LISTING), WRITE_FLAGS
    is_path, isdir = (lambda p: isinstance(p, (str, bytes, os.PathLike))), os.path.isdir

    def refuse(what):
        raise PermissionError(f"{what} is not allowed in the sandbox")

    def guard(event, args):
        if event in forbidden_events or event.startswith(forbidden_prefixes):
            refuse(event)
        if event == "import" and args[0].split(".")[0] in forbidden_imports:
            refuse(f"import {args[0]}")
        if event == "open":
            path, mode, flags = args
            if not is_path(path):
                return  # open(fd): wraps a descriptor that was itself opened through this check
            writing = isinstance(mode, str) and any(c in mode for c in "wax+") or isinstance(flags, int) and flags & write_flags
            if writing and not inside(path, writable):
                refuse(f"writing {os.fsdecode(path)!r} (outside the working directory)")
            if not inside(path, writable) and (mode is None and isdir(path) or not inside(path, readable)):
                refuse(f"reading {os.fsdecode(path)!r}")
        elif event in mutating:
            paths, dir_fds = mutating[event]
            for i in dir_fds:
                if i < len(args) and args[i] not in (None, -1):
                    refuse(f"{event} with dir_fd")
            for i in paths:
                if i >= len(args) or (event == "os.truncate" and isinstance(args[i], int)):  # truncate(fd): opened for writing
                    continue
                if not (is_path(args[i]) and inside(args[i], writable)):
                    refuse(f"{event} of {args[i]!r} (outside the working directory)")
        elif event in listing and args and is_path(args[0]) and not inside(args[0], readable + writable):
            refuse(f"listing {os.fsdecode(args[0])!r}")

    return guard


def run_cell(code: str, namespace: dict) -> None:
    """exec the cell; a final bare expression's value is printed as its repr (like a notebook cell)."""
    tree = ast.parse(code, filename="<cell>")
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    exec(compile(tree, "<cell>", "exec"), namespace)
    if last is not None:
        value = eval(compile(ast.Expression(last.value), "<cell>", "eval"), namespace)
        if value is not None:
            print(repr(value))


def short_error(err: BaseException, memory_mb: int) -> str:
    if isinstance(err, SyntaxError):
        return f"{type(err).__name__}: {err.msg} (line {err.lineno})"
    if isinstance(err, MemoryError):
        return f"MemoryError: over the {memory_mb} MB memory limit"
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[-1]}" if text else type(err).__name__


def main() -> None:
    import ctypes  # imported here, before the hook (numpy and sympy import it); every ctypes.* event is refused

    if sys.platform == "linux":  # killed with the trainer: PR_SET_PDEATHSIG (1) = SIGKILL when the parent goes
        ctypes.CDLL(None).prctl(1, 9)
        if os.getppid() == 1:  # it went before that
            os._exit(1)
    workdir, (cpu_s, memory_mb, file_mb, error_fd) = sys.argv[1], map(int, sys.argv[2:6])
    code = sys.stdin.read()
    sys.stdin.close()
    error_out = os.fdopen(error_fd, "w")
    interpreter = (*sys.path, sys.prefix, sys.base_prefix, sys.exec_prefix)
    readable = tuple(sorted({os.path.realpath(p) for p in interpreter if p and os.path.exists(p)}
                            | {"/dev/null", "/dev/zero", "/dev/urandom", "/usr/share/zoneinfo"}))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))  # SIGXCPU at cpu_s, SIGKILL a second later
    resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_mb << 20, file_mb << 20))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))  # binds a non-root user only (root is exempt)
    for module in (os, sys.modules["posix"]):
        for name in ("mknod", "mkfifo"):  # they create files anywhere and raise no audit event
            if hasattr(module, name):
                delattr(module, name)
    import _posixsubprocess  # subprocess's fork+exec, which raises no audit event: replaced before anything imports it

    def refused(*args, **kwargs):
        raise PermissionError("_posixsubprocess.fork_exec is not allowed in the sandbox")

    _posixsubprocess.fork_exec = refused  # a later re-import is refused by the hook (FORBIDDEN_IMPORTS)
    namespace = {"__name__": "__main__", "__builtins__": __builtins__}
    sys.addaudithook(make_guard(os.path.realpath(workdir), readable))
    try:
        run_cell(code, namespace)
    except BaseException as err:  # noqa: BLE001 -- every failure (SystemExit included) is a short text for the policy
        if isinstance(err, SystemExit) and err.code in (None, 0):
            return
        sys.stdout.flush()
        error_out.write(short_error(err, memory_mb)[:500])
        error_out.flush()
        os._exit(1)


if __name__ == "__main__":
    main()
