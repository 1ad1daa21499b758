"""How a completion ends, as the reward model sees it: where a step's prefix stops, whether a step is the
completion's final one, and whether a step is a tail cut by the length limit.

A rollout's completion either ended (the policy wrote EOS) or was cut by `max_new_tokens` (truncated). The
reward model and its Monte-Carlo labels must judge the text that was written:

- a step's prefix (what a Monte-Carlo continuation follows) ends AFTER the step's separator (the newline of
  ``17\\n``, the ``;`` of ``21;``), so a continuation starts a new step and cannot extend the step's last
  number (``17`` -> ``170``);
- the final step of a completion that ended is judged by verifying the completion itself;
- a final step that no separator closes, in a truncated completion, is a tail the length limit cut: never a
  right step.

`ended` is given per completion: True (EOS), False (truncated), None (not known: taken as ended, the text as
it stands).
"""

from __future__ import annotations

CLOSERS = ";,.!?)]}\n"  # characters that close a step (after its last non-space character, or as that character)


def step_cut(text: str, end: int) -> tuple[int, bool]:
    """(index where the prefix of the step ending at `end` stops, whether a separator closes the step).

    From end + 1, spaces, tabs and closing punctuation are taken, and a newline ends the scan (taken too);
    trailing spaces are left out (a continuation writes its own). "12+5=17\\n17-3" -> cut after the newline;
    "7*3=21;21" at the ';' (end 6) -> cut 7; "12+5=17" at its end -> cut 7, not closed.
    """
    cut = i = end + 1
    closed = 0 <= end < len(text) and text[end] in CLOSERS
    while i < len(text) and (text[i] in " \t" or text[i] in CLOSERS):
        if text[i] in CLOSERS:
            cut, closed = i + 1, True
            if text[i] == "\n":
                break
        i += 1
    return cut, closed


def is_final(text: str, end: int) -> bool:
    """The step ending at `end` is the completion's last: nothing but spaces and closing punctuation follow it."""
    return step_cut(text, end)[0] >= len(text.rstrip())


def is_cut_tail(text: str, end: int, ended: bool | None) -> bool:
    """The step ending at `end` is a truncated completion's unclosed final step (the length limit cut it)."""
    return ended is False and is_final(text, end) and not step_cut(text, end)[1]
