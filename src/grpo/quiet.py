"""Silence third-party output a user can do nothing about (advertising tips, deprecation warnings raised
inside the libraries themselves). Imported once by the pipeline and the warm start."""

from __future__ import annotations

import logging
import warnings

NOISE = ("litlogger", "LitLogger", "Setting accelerator to CPU")


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not any(word in record.getMessage() for word in NOISE)


def silence_third_party_noise() -> None:
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero", "DeepSpeed"):
        logging.getLogger(name).addFilter(_DropTips())
    if logging.getLogger().handlers:  # Hydra (or the user) logs to the console and train.log: Lightning's own copy is a duplicate
        for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
            lightning = logging.getLogger(name)
            for handler in [h for h in lightning.handlers if type(h) is logging.StreamHandler]:
                lightning.removeHandler(handler)
    try:  # transformers' bars for loading and saving a tiny model's single shard
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    except ImportError:
        pass
    # raised inside Lightning's own pytree helper on torch >= 2.9, not by this project's code
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    # the frozen reference (and reward) models are in eval mode on purpose
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")


silence_third_party_noise()
