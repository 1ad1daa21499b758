"""The `python train.py` commands that README.md, docs/*.md and the comments of conf/**/*.yaml show.

`commands()` finds them, `bash_words` runs one through bash as pasted and returns the words `python`
receives, `compose_words` composes the config those words give train.py (tests/test_docs_commands.py).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parents[1]
COMMAND = re.compile(r"(?<![\w/.-])python train\.py\b")
ASSIGNMENT = re.compile(r"^\s*[A-Za-z_][A-Za-z0-9_]*=")  # a shell variable set in the same code block (COMMON="...")


class Command(NamedTuple):
    where: str  # file:line
    text: str  # as a user pastes it: continuation lines joined by backslash-newline, the block's variables first

    @property
    def skipped(self) -> str | None:
        """Why the command cannot run as written: a <placeholder> or a `...` outside quotes and comments."""
        code = shell_code(self.text)
        if re.search(r"<[^<>]+>", code):
            return "placeholder"
        if "..." in code:
            return "ellipsis"
        return None


def shell_code(text: str) -> str:
    """`text` without its quoted strings, escaped characters and comments: what bash reads as bare words."""
    out, quote, i = [], None, 0
    while i < len(text):
        c = text[i]
        if quote:
            if c == "\\" and quote == '"':
                i += 2
                continue
            if c == quote:
                quote = None
        elif c == "\\":
            i += 2
            out.append(" ")
            continue
        elif c in "'\"":
            quote = c
        elif c == "#" and (i == 0 or text[i - 1].isspace()):
            while i < len(text) and text[i] != "\n":
                i += 1
            continue
        else:
            out.append(c)
        i += 1
    return "".join(out)


def _continued(lines: list[str], i: int, strip_comment: bool) -> tuple[str, int]:
    """The command starting on line i with its continuation lines (a trailing backslash); the next line's index."""
    parts = [lines[i]]
    while parts[-1].rstrip().endswith("\\") and i + 1 < len(lines):
        i += 1
        nxt = lines[i]
        if strip_comment:
            nxt = re.sub(r"^\s*#", "", nxt)
        parts.append(nxt)
    return "\n".join(parts), i + 1


def markdown_commands(path: Path) -> list[Command]:
    lines = path.read_text(encoding="utf-8").splitlines()
    found, in_block, variables, i = [], False, [], 0
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith("```"):
            in_block, variables = not in_block, []
            i += 1
            continue
        if in_block and ASSIGNMENT.match(line):
            variables.append(line)
        if in_block and re.match(r"\s*python train\.py\b", line):
            text, nxt = _continued(lines, i, strip_comment=False)
            found.append(Command(f"{path.relative_to(REPO)}:{i + 1}", "\n".join([*variables, text.strip()])))
            i = nxt
            continue
        if not in_block:
            for span in re.findall(r"`([^`\n]+)`", line):
                if span.startswith("python train.py"):
                    found.append(Command(f"{path.relative_to(REPO)}:{i + 1}", span))
        i += 1
    return found


def yaml_commands(path: Path) -> list[Command]:
    lines = path.read_text(encoding="utf-8").splitlines()
    found, i = [], 0
    while i < len(lines):
        line = lines[i]
        comment = line.find("#")
        match = COMMAND.search(line, comment) if comment >= 0 else None
        if match is None:
            i += 1
            continue
        text, nxt = _continued(lines, i, strip_comment=True)
        text = text[match.start():]
        if line[match.start() - 1] == "`":  # `python train.py ...` inside a comment's prose
            text = text.split("`", 1)[0]
        found.append(Command(f"{path.relative_to(REPO)}:{i + 1}", text.strip()))
        i = nxt
    return found


def commands() -> list[Command]:
    docs = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    confs = sorted((REPO / "conf").rglob("*.yaml"))
    return [c for p in docs for c in markdown_commands(p)] + [c for p in confs for c in yaml_commands(p)]


SHIM = """python() { printf '%s\\0' "$@"; }
"""  # bash hands `python`'s words to us, one NUL after each, instead of starting Python


def bash_words(command: Command, cwd: Path = REPO) -> list[str]:
    """The words `python` receives when bash runs `command` as pasted (quotes, continuation lines, trailing
    comments, the block's variables): ["train.py", override, ...]. A bash error raises."""
    result = subprocess.run(["bash", "-c", SHIM + command.text], cwd=cwd, capture_output=True, timeout=60)
    if result.returncode != 0:
        raise RuntimeError(f"bash stopped: {result.stderr.decode(errors='replace')}")
    return result.stdout.decode().split("\0")[:-1]


def compose_words(words: list[str]) -> int:
    """Compose what `python train.py <words>` would: the config of the run, or of every job of a sweep
    (-m, split as Hydra's basic sweeper splits it); an error raises. Returns the number of configs composed."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if words[:1] != ["train.py"]:
        raise ValueError(f"not a train.py command: {words}")
    args = words[1:]
    multirun = any(a in ("-m", "--multirun") for a in args)
    args = [a for a in args if a not in ("-m", "--multirun")]
    if any(a.startswith("-") for a in args):
        raise ValueError(f"flags other than -m are not checked here: {args}")
    if multirun:
        jobs = [list(job) for batch in BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(args), None)
                for job in batch]
    else:
        jobs = [args]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        for job in jobs:
            compose(config_name="train", overrides=job, return_hydra_config=True)
    return len(jobs)
