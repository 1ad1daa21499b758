"""Reward-model examples: policy samples labelled by the task's verifier.

An `RMExample` is a (prompt, completion) pair and its labelled positions, each a character index in
the completion and a 0/1 label:

- ORM ("orm"): one target, the completion's last character, labelled 1 iff the answer is right
  (`task.verify`). An empty completion targets index -1, which the encoder maps to the prompt's
  last token.
- PRM ("prm"): one target per reasoning step, at the step's last character, labelled 1 iff the step
  is right (`task.step_rewards`). A completion with no recognisable step carries nothing to learn and
  is dropped.

Examples travel in checkpoints (the replay buffer) as plain lists: `to_plain` / `from_plain`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from grpo.rollout.collect import sample_problems

KINDS = ("orm", "prm")


@dataclass(frozen=True)
class RMExample:
    prompt: str
    completion: str
    targets: tuple[tuple[int, float], ...]  # (char index in completion, label 1.0 right / 0.0 wrong)

    def to_plain(self) -> list:
        return [self.prompt, self.completion, [[int(c), float(y)] for c, y in self.targets]]

    @staticmethod
    def from_plain(item) -> "RMExample":
        prompt, completion, targets = item
        return RMExample(prompt, completion, tuple((int(c), float(y)) for c, y in targets))


def label_examples(task, kind: str, problems, completions: list[str]) -> list[RMExample]:
    """Verifier labels for `completions` of `problems` (ORM: the answer; PRM: each step)."""
    if kind not in KINDS:
        raise ValueError(f"reward model kind={kind!r} is not known; choose one of {KINDS}")
    examples = []
    for problem, completion in zip(problems, completions):
        if kind == "orm":
            targets = ((len(completion) - 1, float(task.verify(problem, completion))),)
        else:
            targets = tuple((int(c), float(r)) for c, r in task.step_rewards(problem, completion))
            if not targets:
                continue
        examples.append(RMExample(problem.prompt, completion, targets))
    return examples


@torch.no_grad()
def sample_completions(
    policy,
    tokenizer,
    problems,
    *,
    samples_per_prompt: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    batch_prompts: int = 64,
    progress: bool = False,
) -> tuple[list, list[str]]:
    """(problem per completion, completion texts): `samples_per_prompt` samples of each problem, in order."""
    chunks = range(0, len(problems), batch_prompts)
    if progress:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, desc="Sampling for the reward model", unit="batch")
    group_problems, texts = [], []
    for start in chunks:
        chunk = problems[start : start + batch_prompts]
        _, _, out = sample_problems(
            policy, tokenizer, chunk, num_samples=samples_per_prompt,
            max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, generator=generator,
        )
        texts += tokenizer.batch_decode(out.ids.cpu(), skip_special_tokens=True)
        group_problems += [p for p in chunk for _ in range(samples_per_prompt)]
    return group_problems, texts


def split_by_prompt(examples: list[RMExample], heldout_fraction: float, generator: torch.Generator | None = None):
    """(train, heldout): held-out examples come from prompts the training part never sees."""
    prompts = list(dict.fromkeys(e.prompt for e in examples))
    order = torch.randperm(len(prompts), generator=generator).tolist()
    n_heldout = round(heldout_fraction * len(prompts))
    heldout_prompts = {prompts[i] for i in order[:n_heldout]}
    train = [e for e in examples if e.prompt not in heldout_prompts]
    heldout = [e for e in examples if e.prompt in heldout_prompts]
    return train, heldout
