"""Test-only callbacks for the resume tests: record every training step's samples, slow steps down, crash, SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl


class StepRecorder(pl.Callback):
    """Records ``(global step, sample indices)`` of every trained batch, in memory and optionally as JSON lines.

    Args:
        path: file the steps are appended to (survives the process being killed); None: memory only.
        delay: seconds to sleep after each step, so that a test can kill the process mid-epoch.
    """

    def __init__(self, path: str | None = None, delay: float = 0.0) -> None:
        self.path = Path(path) if path else None
        self.delay = float(delay)
        self.steps: list[tuple[int, list[int]]] = []

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = (int(trainer.global_step), [int(i) for i in batch["index"]])
        self.steps.append(step)
        if self.path is not None:
            # under DDP every rank records into its own file: <path> for rank 0, <path>.rank<r> for the others
            rank = trainer.global_rank
            path = self.path if rank == 0 else self.path.with_name(f"{self.path.name}.rank{rank}")
            with open(path, "a") as handle:
                handle.write(json.dumps(step) + "\n")
                handle.flush()
        if self.delay:
            time.sleep(self.delay)


def read_steps(path: str | Path) -> list[tuple[int, list[int]]]:
    """The steps a :class:`StepRecorder` wrote (an empty list when it wrote none)."""
    path = Path(path)
    if not path.is_file():
        return []
    return [tuple(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


class Crash(RuntimeError):
    """The simulated failure of :class:`CrashAt`."""


class CrashAt(pl.Callback):
    """Raises :class:`Crash` when the batch of global step ``step`` is about to be trained."""

    def __init__(self, step: int) -> None:
        self.step = int(step)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step == self.step:
            raise Crash(f"simulated crash before step {self.step}")


class KillAt(pl.Callback):
    """SIGKILLs its own process at a chosen point: a crash that nothing can clean up after.

    Args:
        point: ``train`` (before the batch of global step ``step`` is trained), ``validation``
            (at the first validation batch of epoch ``epoch`` during training) or
            ``final_validation`` (at the first batch of the validation after training).
        step, epoch: where, for the point chosen.
        signal_name: ``KILL`` or ``TERM`` (what a scheduler sends first).
    """

    def __init__(self, point: str, step: int = -1, epoch: int = -1, signal_name: str = "KILL") -> None:
        if point not in ("train", "validation", "final_validation"):
            raise ValueError(f"point must be train, validation or final_validation, got {point!r}")
        self.point, self.step, self.epoch = point, int(step), int(epoch)
        self.signal = getattr(signal, f"SIG{signal_name}")
        self.sent = False

    def _kill(self) -> None:
        if not self.sent:  # SIGTERM lets the process go on to a safe point: send it once
            self.sent = True
            os.kill(os.getpid(), self.signal)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.point == "train" and trainer.global_step == self.step:
            self._kill()

    def on_validation_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if trainer.sanity_checking:
            return
        fitting = trainer.state.fn == "fit"
        if (
            self.point == "validation"
            and fitting
            and trainer.current_epoch == self.epoch
            or self.point == "final_validation"
            and not fitting
        ):
            self._kill()
