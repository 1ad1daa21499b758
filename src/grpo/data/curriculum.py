"""Prompt curriculum: questions the policy always solves, or never does, rest for a while.

A group whose G answers are all right (or all wrong) has no reward spread: GRPO's advantages are 0 and the
question's rollout teaches nothing. prime-rl's difficulty pools move such a question to an easy (all right)
or hard (all wrong) pool sampled less often; open-instruct's active sampling drops a question once its pass
rate reaches a threshold. Here (`DifficultyPool`): a question whose last `window` draws were all "all right"
rests as easy, all "all wrong" as hard, for `rest_steps` GRPO steps; then it is drawn again with a fresh
history. Drawn, that is, in its turn: the data module walks its seeded order of the pool and passes over
resting questions (grpo.data.rollout_datamodule).

The pool is global: every process records the outcomes of every process's groups (the module gathers them),
so all hold the same state, draw the same global batch and slice it the same way, and rank 0's checkpoint
(`state_dict`) restores all of them.
"""

from __future__ import annotations

import torch
from torch import Tensor

EASY, HARD, MIXED = 1, -1, 0  # a group's outcome: all right, all wrong, some of each


def group_outcomes(correct: Tensor, group_size: int) -> Tensor:
    """correct [N] 0/1 (N = questions x G, each group contiguous) -> [questions] long: EASY, HARD or MIXED."""
    right = correct.view(-1, group_size).bool()
    return torch.where(right.all(1), EASY, torch.where((~right).all(1), HARD, MIXED)).long()


class DifficultyPool:
    """The questions' recent outcomes and which of them rest.

    window: draws a question must be all right (or all wrong) in a row to rest (k >= 1).
    rest_steps: GRPO steps it rests: recorded at step s, it is not drawn in steps s+1 .. s+rest_steps.
    """

    def __init__(self, window: int = 2, rest_steps: int = 10):
        if not (isinstance(window, int) and window >= 1):
            raise ValueError(f"data.curriculum.window={window!r}: the draws in a row that send a question to rest, an int >= 1")
        if not (isinstance(rest_steps, int) and rest_steps >= 1):
            raise ValueError(f"data.curriculum.rest_steps={rest_steps!r}: the GRPO steps a question rests, an int >= 1")
        self.window, self.rest_steps = window, rest_steps
        self.history: dict[int, list[int]] = {}  # question index -> its last outcomes (at most `window`), oldest first
        self.resting: dict[int, tuple[int, int]] = {}  # question index -> (last step it rests, EASY or HARD)

    def record(self, step: int, indices: list[int], outcomes: list[int]) -> None:
        """The outcomes of the groups drawn at `step` (question indices into the training pool)."""
        for index, outcome in zip(indices, outcomes):
            index, outcome = int(index), int(outcome)
            recent = (self.history.get(index, []) + [outcome])[-self.window :]
            if len(recent) == self.window and outcome != MIXED and all(o == outcome for o in recent):
                self.resting[index] = (step + self.rest_steps, outcome)
                self.history.pop(index, None)  # back from rest with a fresh history
            else:
                self.history[index] = recent

    def rests(self, index: int, step: int) -> bool:
        """Whether question `index` rests at `step` (is passed over when the step's questions are drawn)."""
        until = self.resting.get(index)
        return until is not None and step <= until[0]

    def sizes(self, step: int, pool_size: int) -> dict[str, float]:
        """data/pool/*: questions resting as easy and as hard at `step`, and the rest (active)."""
        kinds = [kind for until, kind in self.resting.values() if step <= until]
        easy, hard = kinds.count(EASY), kinds.count(HARD)
        return {"easy": float(easy), "hard": float(hard), "active": float(pool_size - easy - hard)}

    def state_dict(self) -> dict:
        return {"history": {str(k): list(v) for k, v in self.history.items()},
                "resting": {str(k): list(v) for k, v in self.resting.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.history = {int(k): list(v) for k, v in state["history"].items()}
        self.resting = {int(k): (int(v[0]), int(v[1])) for k, v in state["resting"].items()}
