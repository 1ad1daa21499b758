"""Every `python train.py` command of README.md, docs/*.md and the conf/ comments composes as pasted into bash.

Each command runs through `bash -c` from the repository root as a user pastes it (continuation lines, a
trailing comment, the code block's variables such as COMMON="..."), with `python` a shell function that
hands back the words it receives; those words are then composed as `python train.py <words> --cfg job`
would compose them (Hydra's override parser, the config groups, every job of a `-m` sweep), in this
process: starting Python and Hydra once per command took minutes. `test_the_cli_agrees` runs the real
`python train.py ... --cfg job` on a good and a bad command. Skipped: commands with a <placeholder> or a
`...` outside quotes, which are not meant to run as written.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from docs_commands import REPO, Command, bash_words, commands, compose_words, markdown_commands, yaml_commands

RUNNABLE = [c for c in commands() if c.skipped is None]


@pytest.mark.parametrize("command", RUNNABLE, ids=[c.where for c in RUNNABLE])
def test_command_composes_as_pasted(command):
    words = bash_words(command)
    try:
        compose_words(words)
    except Exception as err:  # noqa: BLE001 -- any failure is the finding; say which command and why
        pytest.fail(f"{command.where}: {command.text}\n  bash gave train.py: {words[1:]}\n  {type(err).__name__}: {err}")


def test_the_commands_are_found():
    """The extraction over this repository: README, the guides and the conf comments all hold commands."""
    wheres = {c.where.split(":")[0] for c in RUNNABLE}
    assert len(RUNNABLE) >= 40
    assert "README.md" in wheres and any(w.startswith("docs/") for w in wheres) and any(w.startswith("conf/") for w in wheres)


def test_extraction_joins_continuations_and_skips_placeholders(tmp_path, monkeypatch):
    import docs_commands

    monkeypatch.setattr(docs_commands, "REPO", tmp_path)
    (tmp_path / "a.md").write_text(
        "Run `python train.py seed=1` or `python train.py model.name_or_path=<dir>`.\n"
        "```bash\nCOMMON=\"grpo.steps=2\"\npython train.py \\\n    seed=2 $COMMON   # a comment <not a placeholder>\n"
        "python train.py task=gsm8k ... reward=gsm8k\n"
        "python train.py \"prompt.system='End with \\\"#### <number>\\\".'\"\n```\n")
    (tmp_path / "b.yaml").write_text("# e.g.: python train.py -m seed=0,1 \\\n#   grpo.beta=0\nx: 1   # `python train.py x=2` here\n")
    md = markdown_commands(tmp_path / "a.md")
    assert [c.text for c in md] == [
        "python train.py seed=1", "python train.py model.name_or_path=<dir>",
        "COMMON=\"grpo.steps=2\"\npython train.py \\\n    seed=2 $COMMON   # a comment <not a placeholder>",
        "COMMON=\"grpo.steps=2\"\npython train.py task=gsm8k ... reward=gsm8k",
        "COMMON=\"grpo.steps=2\"\npython train.py \"prompt.system='End with \\\"#### <number>\\\".'\"",
    ]
    assert [c.skipped for c in md] == [None, "placeholder", None, "ellipsis", None]
    assert bash_words(md[2]) == ["train.py", "seed=2", "grpo.steps=2"]
    assert bash_words(md[4]) == ["train.py", "prompt.system='End with \"#### <number>\".'"]
    assert [c.text for c in yaml_commands(tmp_path / "b.yaml")] == ["python train.py -m seed=0,1 \\\n   grpo.beta=0", "python train.py x=2"]


BAD = "python train.py prompt=chat prompt.system='Please reason step by step, and put your final answer within \\boxed{}.'"
GOOD = "python train.py prompt=chat \"prompt.system='Please reason step by step, and put your final answer within \\boxed{}.'\""


def test_a_command_that_does_not_compose_fails():
    """3d22abe's README: the system prompt, quoted for bash only, reaches Hydra as bare words with braces."""
    with pytest.raises(Exception, match="mismatched input"):
        compose_words(bash_words(Command("x", BAD)))
    compose_words(bash_words(Command("x", GOOD)))
    with pytest.raises(Exception, match="no_such_setting"):
        compose_words(bash_words(Command("x", "python train.py -m seed=0,1 grpo.no_such_setting=1")))
    with pytest.raises(Exception, match="Ambiguous value"):  # a sweep's commas without -m
        compose_words(bash_words(Command("x", "python train.py seed=0,1")))


@pytest.mark.parametrize("text, ok", [(GOOD, True), (BAD, False)], ids=["good", "bad"])
def test_the_cli_agrees(text, ok):
    """The same verdict from the real entry point: `python train.py ... --cfg job` through bash."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run(["bash", "-c", text + " --cfg job"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert (result.returncode == 0) == ok, result.stderr[-1000:]
