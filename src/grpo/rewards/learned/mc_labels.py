"""Monte-Carlo step labels (Math-Shepherd, arXiv 2312.08935): a step is as good as the answers reached from it.

For a sampled solution with steps s_1..s_K (ends from the `steps` segmenter), step j's prefix is
prompt + completion[:cut_j], cut just after the step's separator (`endings.step_cut`: the newline of a line,
the ';' of a marker step), so a continuation starts a new step and cannot extend the step's last number. N
continuations of each prefix are sampled (the completer: the current policy by default) and each finished
text, prefix + continuation, is checked by the task's final-answer verifier:

    soft label  y_j = (1/N) * #{continuations reaching the right answer}          in {0, 1/N, ..., 1}
    hard label  y_j = 1 if any continuation reaches it else 0

The final step is not continued (nothing the policy wrote follows it): if the completion ended (EOS) its label
is the verifier's verdict on the completion itself (1 or 0); if the length limit cut it with no separator
closing it (a tail, `endings.is_cut_tail`) its label is 0 (closed by its separator, it is continued). `ended` per completion says which (None: ended).

So, unlike a step checker that judges a step's own arithmetic, a step after an unrecoverable mistake is
labelled 0. Any task with a verifier gets process supervision this way (no step checker needed).

`monte_carlo_labels` is the pure part: it takes the completer as a callable (tests pass a deterministic one).
`MonteCarloStepLabels` is the component (conf/step_labels/mc.yaml): it samples the continuations from the
policy through the rollout engine, caches the labels on disk keyed by what made them (policy fingerprint,
task settings, N, temperature, maximum steps, segmentation, seed, the solutions and their endings) and counts
the cost.

Departures from the paper: identical prefixes (the same question and the same text so far, common for the
first steps of a group's samples) are continued once and share their labels; a continuation that reaches the
length limit is verified as it stands, as a rollout's completion is.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import torch

from grpo.rewards.learned.data import RMExample
from grpo.rewards.learned.endings import is_cut_tail, is_final, step_cut
from grpo.rewards.learned.fingerprint import policy_fingerprint, task_settings
from grpo.rollout.engine import KVCacheEngine
from grpo.rollout.segmenters import check_segmenter
from grpo.tasks.base import verified

log = logging.getLogger(__name__)


class Continuations(NamedTuple):
    texts: list[list[str]]  # per prefix, its n continuation texts (special tokens stripped)
    tokens: int  # tokens generated in all


# complete(problems, prefixes, n, seed) -> Continuations: n continuations of each problem's prompt + prefix
Completer = Callable[[list, list[str], int, int], Continuations]


@dataclass
class MCCost:
    """What labelling cost: solutions and steps labelled, prefixes continued, continuations and tokens sampled."""

    solutions: int = 0
    steps: int = 0
    prefixes: int = 0
    continuations: int = 0
    tokens: int = 0
    seconds: float = 0.0

    def __iadd__(self, other: "MCCost") -> "MCCost":
        for key, value in asdict(other).items():
            setattr(self, key, getattr(self, key) + value)
        return self

    def __sub__(self, other: "MCCost") -> "MCCost":
        """What was spent since `other` (an earlier copy of this running total)."""
        return MCCost(**{key: getattr(self, key) - value for key, value in asdict(other).items()})

    def per_step(self) -> dict[str, float]:
        """continuations and tokens per labelled step, seconds per 1,000 labelled steps."""
        steps = max(self.steps, 1)
        return {
            "continuations_per_step": self.continuations / steps,
            "tokens_per_step": self.tokens / steps,
            "seconds_per_1000_steps": 1000 * self.seconds / steps,
        }


def check_settings(n, max_steps, temperature) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"step_labels.n={n!r}: Monte-Carlo labels need at least 1 continuation per step, e.g. step_labels.n=8")
    if max_steps is not None and (not isinstance(max_steps, int) or isinstance(max_steps, bool) or max_steps < 1):
        raise ValueError(f"step_labels.max_steps={max_steps!r}: label at least 1 step per solution, or null for all of them")
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or temperature < 0:
        raise ValueError(f"step_labels.temperature={temperature!r}: must be >= 0 (0: greedy continuations)")


def monte_carlo_labels(task, problems, completions: list[str], segmenter, complete: Completer, *, n: int,
                       max_steps: int | None = None, soft: bool = True, seed: int = 0,
                       ended: list[bool | None] | None = None) -> tuple[list[RMExample], MCCost]:
    """PRM examples of `completions` with Monte-Carlo step labels (soft: the share of right continuations;
    hard: 1.0 iff any is right), and the cost. A completion without a step is dropped; only its first
    `max_steps` steps are labelled (None: all). ended: per completion True (EOS) / False (cut by the length
    limit) / None (not known: as ended); its final step is verified (ended) or labelled 0 (a cut tail)."""
    check_settings(n, max_steps, 1.0)
    check_segmenter(segmenter)
    ended = [None] * len(completions) if ended is None else list(ended)
    if len(ended) != len(completions):
        raise ValueError(f"ended has {len(ended)} entries for {len(completions)} completions")
    t0 = time.perf_counter()
    # per solution: (problem, completion, its ending, per labelled step (end, prefix to continue or None, fixed label))
    solutions, unique = [], {}  # (prompt, prefix) -> (problem, index of its continuations)
    for problem, completion, done in zip(problems, completions, ended):
        steps = []
        for end in segmenter(completion)[:max_steps]:
            if is_cut_tail(completion, end, done):
                steps.append((end, None, 0.0))  # the length limit cut this step: not a right step
            elif done is not False and is_final(completion, end):
                steps.append((end, None, float(verified(task, problem, completion))))  # the policy stopped here
            else:
                prefix = completion[: step_cut(completion, end)[0]]
                unique.setdefault((problem.prompt, prefix), (problem, len(unique)))
                steps.append((end, prefix, None))
        if steps:
            solutions.append((problem, completion, done, steps))
    keys = list(unique)
    out = complete([unique[k][0] for k in keys], [k[1] for k in keys], n, seed) if keys else Continuations([], 0)
    if len(out.texts) != len(keys) or any(len(row) != n for row in out.texts):
        raise ValueError(f"the completer returned {[len(r) for r in out.texts][:5]}... continuations for {len(keys)} prefixes; "
                         f"it must return {n} per prefix")
    right = [sum(verified(task, unique[k][0], k[1] + text) for text in row) for k, row in zip(keys, out.texts)]
    examples = []
    for problem, completion, done, steps in solutions:
        labels = []
        for end, prefix, fixed in steps:
            if fixed is not None:
                labels.append((end, fixed))
            else:
                count = right[unique[(problem.prompt, prefix)][1]]
                labels.append((end, count / n if soft else float(count > 0)))
        examples.append(RMExample(problem.prompt, completion, tuple(labels), ended=done))
    cost = MCCost(solutions=len(solutions), steps=sum(len(s) for *_, s in solutions), prefixes=len(keys),
                  continuations=len(keys) * n, tokens=int(out.tokens), seconds=time.perf_counter() - t0)
    return examples, cost


class PolicyCompleter:
    """Continuations sampled from a causal LM through the rollout engine (`KVCacheEngine`), `batch_size` prefixes
    (x n samples) per call. The prefix is tokenized apart from the prompt and appended, as a rollout's tokens
    follow its prompt."""

    def __init__(self, model, tokenizer, *, max_new_tokens: int, temperature: float, top_p: float = 1.0, batch_size: int = 64):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.engine = KVCacheEngine(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p)

    def __call__(self, problems, prefixes: list[str], n: int, seed: int) -> Continuations:
        if any(type(p).__name__ == "DTensor" or hasattr(p, "ds_id") for p in self.model.parameters()):
            # every rank labels its own samples: a different number of forward passes per rank, which sharded
            # parameters (each forward gathers them across the ranks) cannot do without hanging
            raise RuntimeError("step_labels=mc samples continuations of each rank's own solutions; with the policy sharded "
                               "(strategy=fsdp or deepspeed_zero3) use strategy=ddp or deepspeed_zero2, or rm_schedule=static")
        tok, device = self.tokenizer, next(self.model.parameters()).device
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        self.engine.load_weights(self.model)
        generator = torch.Generator(device=device).manual_seed(seed)
        texts, tokens = [], 0
        for start in range(0, len(prefixes), self.batch_size):
            chunk_problems, chunk = problems[start : start + self.batch_size], prefixes[start : start + self.batch_size]
            prompts = tok([p.prompt for p in chunk_problems], add_special_tokens=False).input_ids
            parts = tok(chunk, add_special_tokens=False).input_ids
            rows = [p + c for p, c in zip(prompts, parts)]
            width = max(map(len, rows))
            ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=device)  # left-padded
            mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
            out = self.engine.generate(ids, mask, eos_token_id=tok.eos_token_id, pad_token_id=pad, num_samples=n, generator=generator)
            decoded = tok.batch_decode(out.ids.cpu(), skip_special_tokens=True)
            texts += [decoded[i * n : (i + 1) * n] for i in range(len(chunk))]
            tokens += int(out.mask.sum())
        return Continuations(texts, tokens)


class MonteCarloStepLabels:
    """Step labels from Monte-Carlo continuations (step_labels=mc): the component LearnedReward labels a PRM's
    data with (its initial training set and every retraining of rm_schedule=iterative).

    segmenter: the `steps` group's choice (where steps end). completer: None samples from the current policy
    (the one `bind` attached, which the run keeps training); else a `Completer` (e.g. a fixed model).
    """

    def __init__(self, segmenter, n: int = 8, soft: bool = True, max_steps: int | None = 16, max_new_tokens: int = 48,
                 temperature: float = 1.0, top_p: float = 1.0, completer: Completer | None = None, batch_size: int = 64,
                 seed: int = 0, cache: bool = True, cache_dir: str = "outputs/cache"):
        check_settings(n, max_steps, temperature)
        self.segmenter = check_segmenter(segmenter, "steps")
        self.n, self.soft, self.max_steps, self.seed = n, soft, max_steps, seed
        self.sampling = dict(max_new_tokens=max_new_tokens, temperature=float(temperature), top_p=float(top_p), batch_size=batch_size)
        self.completer, self.cache, self.cache_dir = completer, cache, Path(cache_dir)
        self.policy = self.tokenizer = None
        self.cost = MCCost()  # all labelling done by this object (cached results cost nothing)

    def describe(self) -> dict:
        """The settings that shape the labels (part of every cache key that depends on them)."""
        return {"labels": "mc", "rules": "endings", "n": self.n, "soft": self.soft, "max_steps": self.max_steps, "seed": self.seed,
                "segmenter": repr(self.segmenter), "completer": None if self.completer is None else repr(self.completer),
                **{k: v for k, v in self.sampling.items() if k != "batch_size"}}

    def bind(self, policy, tokenizer) -> "MonteCarloStepLabels":
        self.policy, self.tokenizer = policy, tokenizer
        return self

    def ends(self, task, problem, completion: str) -> list[int]:
        """Where the PRM scores `completion`: the segmenter's step ends."""
        return self.segmenter(completion)

    def key(self, task, problems, completions: list[str], ended=None) -> str:
        """A hash of everything the labels are made from."""
        ended = [None] * len(completions) if ended is None else list(ended)
        solutions = hashlib.sha256(json.dumps([[p.prompt, p.answer, c, e] for p, c, e in zip(problems, completions, ended)]).encode()).hexdigest()
        made_by = policy_fingerprint(self.policy) if self.completer is None else None
        material = [self.describe(), made_by, type(task).__qualname__, task_settings(task), solutions]
        return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def __call__(self, task, problems, completions: list[str], ended=None) -> list[RMExample]:
        """PRM examples of `completions` with Monte-Carlo labels (from the cache when these were made before);
        ended: per completion True (EOS) / False (cut by the length limit) / None (as ended)."""
        if self.completer is None and self.policy is None:
            raise RuntimeError("step_labels=mc continues prefixes with the policy: bind(policy, tokenizer) first")
        key = self.key(task, problems, completions, ended)
        path = self.cache_dir / f"mc-labels-{key}.json"
        if self.cache and path.exists():
            return [RMExample.from_plain(e) for e in json.loads(path.read_text())["examples"]]
        complete = self.completer or PolicyCompleter(self.policy, self.tokenizer, **self.sampling)
        seed = int(key, 16) % (2**63)  # the continuations are a function of what is labelled (a resumed run repeats them)
        examples, cost = monte_carlo_labels(task, problems, completions, self.segmenter, complete, n=self.n,
                                            max_steps=self.max_steps, soft=self.soft, seed=seed, ended=ended)
        self.cost += cost
        log.debug("Monte-Carlo step labels: %d steps of %d solutions; %s", cost.steps, cost.solutions,
                  ", ".join(f"{k} {v:.1f}" for k, v in cost.per_step().items()))
        if self.cache:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"examples": [e.to_plain() for e in examples], "cost": asdict(cost), "settings": self.describe()}))
            os.replace(tmp, path)
        return examples
