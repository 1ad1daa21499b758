"""Replay buffer for reward-model retraining (Algorithm 1: "a replay mechanism that mixes in 10%
historical data").

The buffer holds labelled examples of earlier policies. `mix(fresh, share)` returns the fresh
examples plus `r` replayed ones, with r chosen so that r / (len(fresh) + r) == share (to rounding):

    r = round(share * n_fresh / (1 - share))         e.g. 90 fresh, share 0.1 -> 10 replayed

Replayed examples are drawn uniformly without replacement; when the history holds fewer than r,
all of it is replayed (the share then falls short). The buffer may be bounded (`capacity`): it then
keeps a uniform sample of everything it was offered (reservoir sampling, seeded by the count seen,
so a resumed run keeps exactly the same examples).
"""

from __future__ import annotations

import random

import torch


def replay_count(n_fresh: int, share: float) -> int:
    """Replayed examples to add to `n_fresh` fresh ones so that replayed / total == share."""
    if not 0.0 <= share < 1.0:
        raise ValueError(f"replay share must be in [0, 1), got {share}")
    return round(share * n_fresh / (1.0 - share))


class ReplayBuffer:
    """Labelled examples of earlier policies (any picklable items; the schedule stores plain lists)."""

    def __init__(self, capacity: int | None = None, seed: int = 0):
        if capacity is not None and capacity < 1:
            raise ValueError(f"replay capacity must be >= 1 or null (unbounded), got {capacity}")
        self.capacity, self.seed = capacity, seed
        self.items: list = []
        self.seen = 0  # items ever offered to `add` (drives the reservoir)

    def __len__(self) -> int:
        return len(self.items)

    def add(self, examples) -> None:
        for example in examples:
            self.seen += 1
            if self.capacity is None or len(self.items) < self.capacity:
                self.items.append(example)
                continue
            slot = random.Random(self.seed * 1_000_003 + self.seen).randrange(self.seen)  # reservoir: keep w.p. capacity/seen
            if slot < self.capacity:
                self.items[slot] = example

    def sample(self, n: int, generator: torch.Generator | None = None) -> list:
        """`n` distinct items drawn uniformly (all of them if the buffer holds fewer)."""
        n = min(n, len(self.items))
        order = torch.randperm(len(self.items), generator=generator)[:n]
        return [self.items[i] for i in order.tolist()]

    def mix(self, fresh: list, share: float, generator: torch.Generator | None = None) -> list:
        """fresh + replayed, with replayed / total == share (to rounding; less if the history is short)."""
        return list(fresh) + self.sample(replay_count(len(fresh), share), generator)

    # ---- checkpointing: plain Python values (loads under torch.load(weights_only=True))
    def state_dict(self) -> dict:
        return {"items": list(self.items), "seen": self.seen, "capacity": self.capacity, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        self.items, self.seen = list(state["items"]), int(state["seen"])
        self.capacity, self.seed = state["capacity"], state["seed"]
