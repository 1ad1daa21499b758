"""Silence third-party output a user can do nothing about (advertising tips, deprecation warnings raised
inside the libraries themselves). Imported once by the pipeline and the warm start."""

from __future__ import annotations

import logging
import warnings

NOISE = ("litlogger", "LitLogger")


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not any(word in record.getMessage() for word in NOISE)


def silence_third_party_noise() -> None:
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(_DropTips())
    # raised inside Lightning's own pytree helper on torch >= 2.9, not by this project's code
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    # the frozen reference (and reward) models are in eval mode on purpose
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")


silence_third_party_noise()
