"""The over-optimisation gauge: on each step's rollouts, how far the learned reward still agrees with the task's
verifier, and what the policy is turning into (logged as rollout/*, every step).

- gauge/auroc: AUROC of the gauged reward's row score against verified correctness, the chance that a right
  completion scores above a wrong one (ties count 1/2); NaN when the rollout's completions are all right or all
  wrong. 0.5: the reward no longer tells right from wrong; below 0.5: it prefers wrong answers.
- gauge/score_gap: mean row score of the right completions minus that of the wrong ones (NaN likewise).
- answer_rate: share of completions with a parsable final answer (`task.extract_answer` is not None).
- steps_per_completion: mean number of scored steps per completion (process supervision only).

The gauged reward is the component that learns (a reward model, alone or inside a weighted reward: the one with
`retrain`), else the whole reward. Its row score is its outcome value, or (process supervision) the lowest of its
step rewards (a completion is as good as its worst step); the whole reward's row score likewise. Completion
length and the truncated share are logged beside these (rollout/completion_len, rollout/truncated_frac).
"""

from __future__ import annotations

import math

from torch import Tensor


def auroc(scores: list[float], right: list[bool]) -> float:
    """P(score of a right completion > score of a wrong one) + 1/2 P(equal), over all right x wrong pairs
    (the Mann-Whitney U statistic / (n_right * n_wrong)); NaN if either class is empty."""
    pos = [s for s, r in zip(scores, right) if r]
    neg = [s for s, r in zip(scores, right) if not r]
    if not pos or not neg:
        return math.nan
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def score_gap(scores: list[float], right: list[bool]) -> float:
    """mean score of the right completions - mean score of the wrong ones (NaN if either class is empty)."""
    pos = [s for s, r in zip(scores, right) if r]
    neg = [s for s, r in zip(scores, right) if not r]
    return sum(pos) / len(pos) - sum(neg) / len(neg) if pos and neg else math.nan


def gauged_name(reward) -> str | None:
    """The name of the component that learns (has `retrain`) in a WeightedRewards, None otherwise."""
    components = getattr(reward, "components", None) or {}
    return next((name for name, c in components.items() if hasattr(c.fn, "retrain")), None)


def row_scores(scores, name: str | None, process: bool) -> list[float | None]:
    """Per completion, the gauged reward's score (see the module docstring); None where it gave none."""
    if name is None:
        if not process:
            return list(scores.rewards)
        return [min(v for _, v in row) if row else None for row in scores.steps]
    if process and name in scores.lowest:
        return list(scores.lowest[name])
    return list(scores.components[name])


def rollout_gauge(task, texts: list[str], correct: Tensor, scores: list, name: str | None, process: bool) -> dict[str, float]:
    """The gauge's statistics of one rollout. texts, correct: [N] (every generation batch, in order); scores: the
    batches' `grpo.rewards.combine.Scores`, in the same order."""
    values = [v for s in scores for v in row_scores(s, name, process)]
    right = [bool(c) for c in correct.tolist()]
    kept = [(v, r) for v, r in zip(values, right) if v is not None]
    out = {
        "gauge/auroc": auroc([v for v, _ in kept], [r for _, r in kept]),
        "gauge/score_gap": score_gap([v for v, _ in kept], [r for _, r in kept]),
        "answer_rate": sum(task.extract_answer(t) is not None for t in texts) / max(len(texts), 1),
    }
    if process:
        rows = [row for s in scores for row in s.steps]
        out["steps_per_completion"] = sum(len(row) for row in rows) / max(len(rows), 1)
    return out
