"""Where the policy comes from: the `model` config group.

- `TinyPolicy` (conf/model/tiny.yaml, the default): a tiny Llama/Qwen2-shaped model and a char
  tokenizer, built offline and warm-started by supervised training on the task; the result is
  cached under `cache_dir` (keyed by everything that shapes it) and reused by later runs.
- `PretrainedPolicy` (conf/model/hf.yaml): any transformers causal LM and its tokenizer, by hub id
  or local directory (e.g. a previous run's `export/`), optionally warm-started on the task's worked
  solutions first (`warmstart_steps` > 0; cached like the tiny model's).
Both return the tokenizer alone from `tokenizer(task)` (the prompt format binds to it before any
model is loaded) and `(model, tokenizer)` from `load(task)`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import string
from collections.abc import Mapping
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from grpo.models.cache import build_once
from grpo.models.dropout import disable_dropout
from grpo.models.tiny import TinyArch, build_tiny_model
from grpo.models.tokenizer import build_char_tokenizer
from grpo.models.warmstart import train_warm_start

log = logging.getLogger(__name__)

PRINTABLE = string.printable  # alphabet of the char tokenizer for tasks that do not restrict it


class TinyPolicy:
    def __init__(
        self,
        arch: TinyArch | Mapping | None = None,
        warmstart_steps: int = 2000,
        warmstart_batch_size: int = 64,
        warmstart_lr: float = 2e-3,
        seed: int = 0,
        cache_dir: str = "outputs/cache",
        gradient_checkpointing: bool = False,
        disable_dropout: bool = True,
    ):
        self.arch = TinyArch.from_node(arch, where="model.arch")
        self.gradient_checkpointing, self.disable_dropout = gradient_checkpointing, disable_dropout
        self.warmstart = dict(steps=warmstart_steps, batch_size=warmstart_batch_size, lr=warmstart_lr, seed=seed)
        self.cache_dir = Path(cache_dir)

    def tokenizer(self, task):
        """The char tokenizer over the task's alphabet (what `load` returns with the model)."""
        return build_char_tokenizer(task.alphabet or PRINTABLE)

    def cache_path(self, task_key: str) -> Path:
        key = json.dumps([self.arch.as_dict(), self.warmstart, task_key], sort_keys=True)
        return self.cache_dir / f"warmstart-{hashlib.sha256(key.encode()).hexdigest()[:12]}"

    def load(self, task, task_key: str = ""):
        """(model, tokenizer); `task_key` names the task's settings, so that another task gets its own cache."""
        path = build_once(self.cache_path(task_key), "config.json", lambda tmp: self._build(task, tmp))
        return prepared(load_pretrained(str(path)), self.gradient_checkpointing, self.disable_dropout)

    def _build(self, task, out: Path) -> None:
        tokenizer = self.tokenizer(task)
        model = build_tiny_model(self.arch.config(tokenizer), seed=self.warmstart["seed"])
        if self.warmstart["steps"] > 0:
            log.info("Warm start: %d supervised steps, cached for later runs", self.warmstart["steps"])
            train_warm_start(model, tokenizer, task, log_dir=str(out.parent), **self.warmstart)
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)


class PretrainedPolicy:
    """A hub id or local directory; warmstart_steps > 0: first `warmstart_steps` supervised steps on the task's
    worked solutions (prompts as the `prompt` group renders them), cached under `cache_dir`."""

    def __init__(
        self,
        name_or_path: str,
        dtype: str = "float32",
        trust_remote_code: bool = False,
        warmstart_steps: int = 0,
        warmstart_batch_size: int = 16,
        warmstart_lr: float = 1e-5,
        seed: int = 0,
        cache_dir: str = "outputs/cache",
        gradient_checkpointing: bool = False,
        disable_dropout: bool = True,
    ):
        if not isinstance(warmstart_steps, int) or warmstart_steps < 0:
            raise ValueError(f"warmstart.steps={warmstart_steps!r}: must be an integer >= 0 (0: no warm start)")
        self.name_or_path, self.dtype, self.trust_remote_code = name_or_path, dtype, trust_remote_code
        self.warmstart = dict(steps=warmstart_steps, batch_size=warmstart_batch_size, lr=warmstart_lr, seed=seed)
        self.cache_dir = Path(cache_dir)
        self.gradient_checkpointing, self.disable_dropout = gradient_checkpointing, disable_dropout

    def tokenizer(self, task=None):
        return load_tokenizer(self.name_or_path, self.trust_remote_code)

    def cache_path(self, task_key: str) -> Path:
        """Keyed by the model (a local directory: its path and its files' sizes and times), the warm start and the task."""
        local = Path(self.name_or_path).expanduser()
        source = [str(local.resolve()), sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in local.iterdir() if f.is_file())] \
            if local.is_dir() else [self.name_or_path]
        key = json.dumps([source, self.warmstart, task_key], sort_keys=True)
        return self.cache_dir / f"warmstart-hf-{hashlib.sha256(key.encode()).hexdigest()[:12]}"

    def load(self, task, task_key: str = ""):
        path = self.name_or_path
        if self.warmstart["steps"] > 0:
            path = str(build_once(self.cache_path(task_key), "config.json", lambda tmp: self._build(task, tmp)))
        return prepared(load_pretrained(path, self.dtype, self.trust_remote_code), self.gradient_checkpointing, self.disable_dropout)

    def _build(self, task, out: Path) -> None:
        model, tokenizer = load_pretrained(self.name_or_path, "float32", self.trust_remote_code)  # trained in float32
        log.info("Warm start of %s: %d supervised steps, cached for later runs", self.name_or_path, self.warmstart["steps"])
        train_warm_start(model, tokenizer, task, log_dir=str(out.parent), **self.warmstart)
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)


def prepared(loaded, gradient_checkpointing: bool, no_dropout: bool = True):
    """(model, tokenizer) as a run trains it: every dropout off unless the model keeps it (`model.disable_dropout`,
    see grpo.models.dropout), gradient checkpointing switched on when asked (activations recomputed in the backward
    of the update, which runs in train mode: GRPOModule.training_step)."""
    model, tokenizer = loaded
    if no_dropout:
        disable_dropout(model)
    if gradient_checkpointing:
        if not model.supports_gradient_checkpointing:
            raise ValueError(f"model.gradient_checkpointing=true: {type(model).__name__} does not support it; set it to false")
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5 (the old name is deprecated)
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model, tokenizer


def _unreachable(name_or_path: str, err: Exception) -> ValueError:
    return ValueError(
        f"Could not load a causal LM from model.name_or_path={name_or_path!r}: it is neither a local "
        "directory holding a transformers model (config.json, weights, tokenizer) nor a hub id that can be "
        f"reached from here. Pass a local path, e.g. model.name_or_path=outputs/<run>/export. ({err})"
    )


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False):
    """The tokenizer of a hub id or local directory, left-padding, with a pad token (EOS when it has none)."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise _unreachable(name_or_path, err) from err
    if tokenizer.pad_token is None:  # many causal LMs ship without one; padding is always masked anyway
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def load_pretrained(name_or_path: str, dtype: str = "float32", trust_remote_code: bool = False):
    """(model, tokenizer) from a hub id or local directory, with a clear error when neither exists."""
    tokenizer = load_tokenizer(name_or_path, trust_remote_code)
    try:
        model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise _unreachable(name_or_path, err) from err
    return model, tokenizer
