"""Reward-model examples: policy samples labelled by the task's verifier.

An `RMExample` is a (prompt, completion) pair and its labelled positions, each a character index in
the completion and a 0/1 label:

- ORM ("orm"): one target, the completion's last character, labelled 1 iff the answer is right
  (`task.verify`). An empty completion targets index -1, which the encoder maps to the prompt's
  last token.
- PRM ("prm"): one target per reasoning step, at the step's last character, labelled 1 iff the step
  is right (`task.step_rewards`; `CheckerStepLabels`, step_labels=checker). A completion with no
  recognisable step carries nothing to learn and is dropped. With step_labels=mc the steps come from
  the segmenter and the labels from Monte-Carlo continuations (`mc_labels`), soft labels in [0, 1].

Examples travel in checkpoints (the replay buffer) as plain lists: `to_plain` / `from_plain`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from grpo.tasks.base import verified

KINDS = ("orm", "prm")


@dataclass(frozen=True)
class RMExample:
    prompt: str
    completion: str
    targets: tuple[tuple[int, float], ...]  # (char index in completion, label: 1.0 right / 0.0 wrong, or a share in between)
    ended: bool | None = None  # True: the policy wrote EOS (the reward model reads the final step there); False: cut by
    # the length limit; None: not known (no EOS is shown)

    def to_plain(self) -> list:
        return [self.prompt, self.completion, [[int(c), float(y)] for c, y in self.targets], self.ended]

    @staticmethod
    def from_plain(item) -> "RMExample":
        prompt, completion, targets, *ended = item
        return RMExample(prompt, completion, tuple((int(c), float(y)) for c, y in targets), ended[0] if ended else None)


def label_examples(task, kind: str, problems, completions: list[str], ended=None) -> list[RMExample]:
    """Verifier labels for `completions` of `problems` (ORM: the answer; PRM: each step); ended: per completion
    True (EOS) / False (cut by the length limit) / None, carried by each example (the encoder shows the EOS)."""
    if kind not in KINDS:
        raise ValueError(f"reward model kind={kind!r} is not known; choose one of {KINDS}")
    examples = []
    for problem, completion, done in zip(problems, completions, [None] * len(completions) if ended is None else ended):
        if kind == "orm":
            targets = ((len(completion) - 1, float(verified(task, problem, completion))),)
        else:
            targets = tuple((int(c), float(r)) for c, r in task.step_rewards(problem, completion))
            if not targets:
                continue
        examples.append(RMExample(problem.prompt, completion, targets, done))
    return examples


class CheckerStepLabels:
    """A PRM's step labels from the task's step checker (step_labels=checker, the default): `task.step_rewards`
    gives each step's end and its 0/1 label."""

    def describe(self) -> None:
        return None  # nothing beyond the task: the reward model's cache key stays as it was

    def bind(self, policy, tokenizer) -> "CheckerStepLabels":
        return self

    def ends(self, task, problem, completion: str) -> list[int]:
        """Where the PRM scores `completion`: the checker's step ends (its labels unused)."""
        return [c for c, _ in task.step_rewards(problem, completion)]

    def __call__(self, task, problems, completions: list[str], ended=None) -> list[RMExample]:
        return label_examples(task, "prm", problems, completions, ended)


def checker_labels(task, problem, completion: str) -> tuple[dict[int, float], dict[int, float]]:
    """{step end: label} of the task's exact step checker (`task.step_rewards`), and {step end: 1.0 iff every step up
    to it is right} (the prefix label, what Monte-Carlo labels estimate)."""
    own, prefix, ok = {}, {}, 1.0
    for end, label in task.step_rewards(problem, completion):
        ok = min(ok, label)
        own[end], prefix[end] = label, ok
    return own, prefix


def split_by_prompt(examples: list[RMExample], heldout_fraction: float, generator: torch.Generator | None = None):
    """(train, heldout): held-out examples come from prompts the training part never sees."""
    prompts = list(dict.fromkeys(e.prompt for e in examples))
    order = torch.randperm(len(prompts), generator=generator).tolist()
    n_heldout = round(heldout_fraction * len(prompts))
    heldout_prompts = {prompts[i] for i in order[:n_heldout]}
    train = [e for e in examples if e.prompt not in heldout_prompts]
    heldout = [e for e in examples if e.prompt in heldout_prompts]
    return train, heldout
