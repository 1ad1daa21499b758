"""What the terminal shows during a run: one bar over GRPO steps (step i/N, elapsed, remaining) with the
latest rollout reward, rollout accuracy, KL, policy entropy and the latest held-out accuracy; in a log file (no
terminal) a line every `log_every` steps says the same. The warm start's bar counts optimizer steps.
When the policy's mean token entropy (train/entropy) falls below `entropy_floor` (nats) or below `entropy_ratio`
times its value at the run's first logged step (the warm start's entropy: a small model trained on a narrow task
starts far below any fixed floor), the bar and the line say "entropy collapse" and a warning is logged once each
time it crosses below (null: that check off).

Lightning's own bar shows a bar per epoch, always 1/1 here (one epoch is one GRPO step); this one
replaces it (a ProgressBar callback: Lightning then adds none of its own).
"""

from __future__ import annotations

import logging
import sys
import time

from lightning.pytorch.callbacks import ProgressBar

log = logging.getLogger("grpo")

SHOWN = {  # logged metric -> how the bar names it
    "rollout/reward_mean": "reward",
    "rollout/accuracy": "acc",
    "train/kl": "kl",
    "train/entropy": "entropy",
    "val/accuracy": "held-out acc",
    "sft/loss": "loss",
}


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes:02d}:{seconds:02d}"


class StepProgressBar(ProgressBar):
    """count: "epochs" (one GRPO step each) or "batches" (optimizer steps, for the warm start)."""

    def __init__(self, unit: str = "GRPO step", count: str = "epochs", log_every: int = 10, entropy_floor: float | None = None,
                 entropy_ratio: float | None = None):
        super().__init__()
        if count not in ("epochs", "batches"):
            raise ValueError(f"count={count!r}: choose epochs or batches")
        if entropy_floor is not None and entropy_floor <= 0:
            raise ValueError(f"callbacks.progress.entropy_floor={entropy_floor}: a positive entropy (nats), or null for no check")
        if entropy_ratio is not None and not 0 < entropy_ratio < 1:
            raise ValueError(f"callbacks.progress.entropy_ratio={entropy_ratio}: a fraction in (0, 1) of the first step's entropy, or null")
        self.unit, self.count, self.log_every, self.entropy_floor, self.entropy_ratio = unit, count, log_every, entropy_floor, entropy_ratio
        self._collapsed, self._entropy0 = False, None
        self._enabled, self._bar, self._done = True, None, 0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    def _total(self, trainer) -> int:
        return trainer.max_epochs if self.count == "epochs" else trainer.max_steps

    def on_train_start(self, trainer, pl_module) -> None:
        if not (self._enabled and trainer.is_global_zero):
            return
        self._done = trainer.current_epoch if self.count == "epochs" else trainer.global_step
        self._start, self._first = time.perf_counter(), self._done
        if sys.stderr.isatty():
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self._total(trainer), initial=self._done, unit=self.unit.split()[-1], desc=self.unit, dynamic_ncols=True)

    def _advance(self, trainer) -> None:
        if not (self._enabled and trainer.is_global_zero):
            return
        self._done += 1
        shown = {name: float(trainer.callback_metrics[key]) for key, name in SHOWN.items() if key in trainer.callback_metrics}
        collapsed = self._entropy_check(shown)
        if self._bar is not None:
            self._bar.update(1)
            postfix = {k: f"{v:.3f}" for k, v in shown.items()} | ({"entropy collapse": "!"} if collapsed else {})
            self._bar.set_postfix(postfix, refresh=True)
        elif self._done % self.log_every == 0 or self._done == self._total(trainer):
            elapsed = time.perf_counter() - self._start
            rate = elapsed / max(1, self._done - self._first)
            remaining = rate * (self._total(trainer) - self._done)
            values = "  ".join(f"{k} {v:.3f}" for k, v in shown.items())
            values += f"  entropy collapse (< {self._threshold():.3g})" if collapsed else ""
            log.info("%s %d/%d  elapsed %s  remaining %s  %s", self.unit, self._done, self._total(trainer), _clock(elapsed), _clock(remaining), values)

    def _threshold(self) -> float:
        """The entropy below which the policy counts as collapsing: the higher of the two floors that are set."""
        floors = [self.entropy_floor or 0.0]
        if self.entropy_ratio is not None and self._entropy0 is not None:
            floors.append(self.entropy_ratio * self._entropy0)
        return max(floors)

    def _entropy_check(self, shown: dict[str, float]) -> bool:
        """True while the latest mean token entropy is below the threshold; warns when it crosses below."""
        if "entropy" not in shown:
            return False
        if self._entropy0 is None:
            self._entropy0 = shown["entropy"]  # the first step's (after a resume: the first step of this process)
        collapsed = shown["entropy"] < self._threshold()
        if collapsed and not self._collapsed:
            which = []
            if self.entropy_floor is not None and shown["entropy"] < self.entropy_floor:
                which.append(f"callbacks.progress.entropy_floor={self.entropy_floor:g}")
            if self.entropy_ratio is not None and shown["entropy"] < self.entropy_ratio * self._entropy0:
                which.append(f"callbacks.progress.entropy_ratio={self.entropy_ratio:g} x the first step's {self._entropy0:.4f}")
            log.warning("policy entropy %.4f fell below %s at %s %d: the policy may be collapsing (fewer distinct samples, "
                        "more flat groups); see loss=entropy_bonus or loss=top_entropy", shown["entropy"], " and ".join(which),
                        self.unit, self._done)
        self._collapsed = collapsed
        return collapsed

    # epochs: the finished step's metrics reach callback_metrics after its epoch-end hooks, so the bar moves at
    # the next step's start (and at the end of training for the last one)
    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if self.count == "epochs" and trainer.current_epoch > self._done:
            self._advance(trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.count == "batches":
            self._advance(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        if self.count == "epochs" and trainer.is_global_zero and self._enabled:
            while self._done < min(trainer.current_epoch, self._total(trainer)):
                self._advance(trainer)
        if self._bar is not None:
            self._bar.close()
            self._bar = None
