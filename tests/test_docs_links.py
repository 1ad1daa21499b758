"""Every relative link in README.md and docs/*.md points to a file that exists, and its #anchor to a heading there."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")  # [text](target); images too


def prose(text: str) -> str:
    """The text outside fenced code blocks and inline code (a `[x](y)` there is not a link)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, inline markup and punctuation dropped, spaces to '-'."""
    heading = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", heading).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.S | re.M)
    return {anchor(m) for m in re.findall(r"^#+\s+(.*)$", text, flags=re.M)}


def links(path: Path) -> list[tuple[str, str]]:
    found = LINK.findall(prose(path.read_text(encoding="utf-8")))
    return [(path.relative_to(REPO).as_posix(), t) for t in found if not re.match(r"[a-z]+:", t)]  # http:, https:, mailto:


ALL = [link for path in DOCS for link in links(path)]


@pytest.mark.parametrize("where, target", ALL, ids=[f"{w}->{t}" for w, t in ALL])
def test_relative_link_resolves(where, target):
    file_part, _, fragment = target.partition("#")
    source = REPO / where
    dest = (source.parent / file_part).resolve() if file_part else source
    assert dest.exists(), f"{where}: {target} -> {dest} does not exist"
    assert dest.is_relative_to(REPO), f"{where}: {target} leaves the repository"
    if fragment:
        assert dest.suffix == ".md", f"{where}: {target}: an anchor into a file that is not markdown"
        assert fragment in anchors(dest), f"{where}: {target}: no heading with anchor #{fragment} in {dest.name}"


def test_links_are_found():
    """README links to every guide; each guide is reachable from README."""
    readme_targets = {t.split("#")[0] for w, t in ALL if w == "README.md"}
    guides = {f"docs/{p.name}" for p in DOCS if p.parent.name == "docs"}
    assert len(guides) >= 9 and guides <= readme_targets


def test_anchor_rules():
    assert anchor("Memory and length: LoRA, gradient checkpointing, bf16") == "memory-and-length-lora-gradient-checkpointing-bf16"
    assert anchor("Your own task (`task=custom`)") == "your-own-task-taskcustom"
    assert anchor("The default run (`bash scripts/train.sh`)") == "the-default-run-bash-scriptstrainsh"
    assert anchor("Reward models and the iterative schedule (Algorithm 1)") == "reward-models-and-the-iterative-schedule-algorithm-1"
