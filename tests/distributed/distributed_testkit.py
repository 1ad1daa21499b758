"""Helpers for the multi-process runs (importable as `distributed_testkit` by the processes they start)."""

from __future__ import annotations

from grpo_testkit import DigitShareReward


class DigitShareSteps(DigitShareReward):
    """DigitShareReward with process rewards too: every ';' that ends a step, and the completion's last
    character, get the completion's digit share (scaled by how far along it is), so that groups have
    step-reward spread even for an untrained policy and supervision=process really updates it."""

    def steps(self, problems, completions):
        rewards = []
        for share, text in zip(self.outcome(problems, completions).tolist(), completions):
            ends = [i for i, ch in enumerate(text) if ch == ";"] + ([len(text) - 1] if text else [])
            rewards.append([(end, share * (k + 1) / len(ends)) for k, end in enumerate(ends)])
        return rewards
