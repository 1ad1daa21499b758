"""The python tool's sandbox against hostile code (issue 22): an infinite loop, a fork bomb, a 10 GB allocation,
os.remove of a file outside its folder, a socket, a megabyte of print, a syntax error. Each returns a short error
text, returns within its limits (a bound with a margin for a loaded machine, not a speed claim), and leaves no
process, no temporary directory and the test's files as they were."""

from __future__ import annotations

import os
import socket
import tempfile
import time
from pathlib import Path

import pytest

from grpo.tools.python import Python

TIMEOUT_S = 2.0
MARGIN_S = 6.0  # interpreter start-up on a busy 2-core machine; the bound is timeout + margin
SHORT = 200  # an error text the policy gets is at most this long


def sandbox_processes() -> set[int]:
    """Live processes running grpo.tools.sandbox_child (the sandbox's child)."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if b"sandbox_child.py" in (entry / "cmdline").read_bytes():
                    pids.add(int(entry.name))
            except OSError:
                pass
    return pids


@pytest.fixture
def run(tmp_path, monkeypatch):
    """call(code, **limits) -> (text, error), checking the bound and that nothing is left behind."""
    workdirs = tmp_path / "sandbox-tmp"
    workdirs.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(workdirs))  # the sandbox's mkdtemp lands here: we can see leftovers

    def call(code: str, **limits):
        tool = Python(**{"timeout_s": TIMEOUT_S, "cpu_s": 2, "memory_mb": 512, "max_output_chars": 300, **limits})
        before = sandbox_processes()
        start = time.monotonic()
        text, error = tool(code)
        elapsed = time.monotonic() - start
        assert elapsed < tool.limits.timeout_s + MARGIN_S, f"took {elapsed:.1f} s"
        assert list(workdirs.iterdir()) == [], "the temporary working directory was left behind"
        assert not (sandbox_processes() - before), "a sandbox process outlived its call"
        return text, error

    return call


def test_output_and_the_value_of_a_final_expression(run):
    assert run("x = 6 * 7\nprint('x is', x)\nx + 1") == ("x is 42\n43\n", False)
    assert run("from fractions import Fraction\nFraction(1, 3) + Fraction(1, 6)") == ("Fraction(1, 2)\n", False)
    assert run("y = 1") == ("", False)  # no bare final expression: nothing printed


def test_infinite_loop_is_stopped_at_the_wall_clock_limit(run):
    text, error = run("while True:\n    pass", cpu_s=30)
    assert error and text == f"TimeoutError: the code ran past its {TIMEOUT_S:g} s time limit"


def test_cpu_time_limit(run):
    text, error = run("while True:\n    pass", timeout_s=20, cpu_s=1)
    assert error and text == "TimeoutError: the code used its 1 s of CPU time"


def test_fork_bomb(run):
    text, error = run("import os\nwhile True:\n    os.fork()")
    assert error and text == "PermissionError: os.fork is not allowed in the sandbox"
    for code in ("import subprocess\nsubprocess.run(['sh', '-c', ':(){ :|:& };:'])", "import os\nos.system('echo hi')",
                 "import os\nos.execv('/bin/true', ['true'])", "import multiprocessing",
                 "import subprocess\nsubprocess._fork_exec(*[None] * 23)"):
        text, error = run(code)
        assert error and text.startswith("PermissionError:") and len(text) < SHORT, (code, text)


def test_ten_gigabyte_allocation(run):
    text, error = run("block = bytearray(10 * 2**30)\nprint('allocated')", memory_mb=512)
    assert error and text == "MemoryError: over the 512 MB memory limit"


@pytest.mark.parametrize("code", [
    "import os\nos.remove({path!r})",
    "import os\nos.unlink({path!r})",
    "import os\nos.rename({path!r}, 'mine.txt')",
    "import shutil\nshutil.rmtree({folder!r})",
    "open({path!r}, 'w').write('overwritten')",
    "import os\nos.chdir({folder!r})\nos.remove('victim.txt')",
    "import os\nfd = os.open({folder!r}, os.O_RDONLY)\nos.unlink('victim.txt', dir_fd=fd)",
])
def test_files_outside_its_folder_are_left_alone(run, tmp_path, code):
    folder = tmp_path / "open-to-all"  # world-writable: only the sandbox's own rules keep the file (we run as root)
    folder.mkdir()
    folder.chmod(0o777)
    victim = folder / "victim.txt"
    victim.write_text("keep me")
    text, error = run(code.format(path=str(victim), folder=str(folder)))
    assert error and text.startswith("PermissionError:") and len(text) < SHORT, text
    assert victim.read_text() == "keep me"


def test_files_inside_its_folder_are_its_own(run):
    text, error = run("import os\nopen('a.txt', 'w').write('hi')\nos.rename('a.txt', 'b.txt')\nprint(open('b.txt').read())\n"
                      "os.remove('b.txt')\nos.listdir('.')")
    assert (text, error) == ("hi\n[]\n", False)


def test_a_file_past_the_size_limit(run):
    text, error = run("open('big.bin', 'wb').write(b'x' * (3 * 2**20))", file_mb=1)
    assert error and ("File too large" in text or "file size limit" in text) and len(text) < SHORT, text


def test_socket_makes_no_connection(run):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        for code in (f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)",
                     f"import _socket\n_socket.socket().connect(('127.0.0.1', {port}))",
                     f"import urllib.request\nurllib.request.urlopen('http://127.0.0.1:{port}/', timeout=1)"):
            text, error = run(code)
            assert error and text.startswith("PermissionError:") and len(text) < SHORT, (code, text)
        server.settimeout(0.5)
        with pytest.raises(socket.timeout):
            server.accept()  # nothing ever connected


def test_a_megabyte_of_print_is_truncated(run):
    text, error = run("print('x' * 2**20)", max_output_chars=300)
    assert error and text == "x" * 300 + "\n... OutputLimit: output truncated at 300 characters"
    text, error = run("while True:\n    print('spam')", max_output_chars=300)  # endless output: stopped at the limit too
    assert error and text.endswith("OutputLimit: output truncated at 300 characters")


def test_syntax_error(run):
    text, error = run("x = (1 +")
    assert error and text == "SyntaxError: '(' was never closed (line 1)"
    text, error = run("print('before')\n1 / 0")
    assert error and text == "before\nZeroDivisionError: division by zero"


def test_the_trainers_environment_and_files_are_not_visible(run, monkeypatch):
    monkeypatch.setenv("GRPO_TEST_SECRET", "hunter2")
    text, error = run("import os\n'GRPO_TEST_SECRET' in os.environ")
    assert (text, error) == ("False\n", False)
    text, error = run(f"open({str(Path(__file__))!r}).read()")
    assert error and text.startswith("PermissionError: reading")
    text, error = run("import resource\nresource.setrlimit(resource.RLIMIT_AS, (-1, -1))")
    assert error and text == "PermissionError: resource.setrlimit is not allowed in the sandbox"


def test_bad_limits_are_a_clear_error():
    with pytest.raises(ValueError, match=r"timeout_s=0 must be > 0 \(set it in conf/tools/python.yaml\)"):
        Python(timeout_s=0)


def test_the_sandbox_dies_with_the_trainer(tmp_path):
    """A trainer killed mid-call (SIGKILL: no cleanup runs) takes its sandbox process with it."""
    import signal
    import subprocess
    import sys

    trainer = subprocess.Popen([sys.executable, "-c", "from grpo.tools.python import Python\n"
                                "Python(timeout_s=120, cpu_s=60)('import time\\ntime.sleep(120)')"],
                               env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "TMPDIR": str(tmp_path)})
    deadline = time.monotonic() + 30
    while not (children := {p for p in sandbox_processes() if Path(f"/proc/{p}/stat").read_text().split()[3] == str(trainer.pid)}):
        assert time.monotonic() < deadline and trainer.poll() is None, "the sandbox never started"
        time.sleep(0.1)
    trainer.send_signal(signal.SIGKILL)
    trainer.wait()
    deadline = time.monotonic() + 10
    while children & sandbox_processes():
        assert time.monotonic() < deadline, "the sandbox outlived its trainer"
        time.sleep(0.1)


def test_a_trainer_holding_many_descriptors(run):
    """The output pipe gets a descriptor number past 1024 (select.select's limit) when the trainer holds many."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < 1200")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        assert run("print(6 * 7)") == ("42\n", False)
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
