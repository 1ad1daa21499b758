"""Model modes for sampling and scoring."""

from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def evaluating(*models):
    """Models in eval mode (no dropout) for sampling and scoring, restored afterwards."""
    was = [m.training for m in models]
    for m in models:
        m.eval()
    try:
        yield
    finally:
        for m, w in zip(models, was):
            m.train(w)
