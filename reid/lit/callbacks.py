"""Training callbacks: stop on, or skip, a batch whose loss or gradients are not finite; training throughput."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, NamedTuple

import pytorch_lightning as pl
import torch

from reid.errors import ReidError

log = logging.getLogger(__name__)

GUARD_ACTIONS = ("stop", "skip")
# Sample indices / pids named in the error message at most (a batch can hold hundreds).
MAX_NAMED_SAMPLES = 32


class NonFiniteLossError(ReidError, RuntimeError):
    """Training produced a NaN or infinite loss or gradient; raised before the weights were updated."""


class _BatchInfo(NamedTuple):
    batch_idx: int
    indices: Any  # the batch's "index" entry, or None
    pids: Any  # the batch's "pid" entry, or None


def _tensor_list(value: Any) -> list[Any] | None:
    if isinstance(value, torch.Tensor):
        return value.detach().flatten().cpu().tolist()
    if isinstance(value, (list, tuple)):
        return list(value)
    return None


def _named_values(values: list[Any] | None) -> str:
    if values is None:
        return "?"
    shown = ", ".join(str(v) for v in values[:MAX_NAMED_SAMPLES])
    more = f", ... ({len(values)} in all)" if len(values) > MAX_NAMED_SAMPLES else ""
    return f"[{shown}{more}]"


def _newest_checkpoint(trainer: pl.Trainer) -> str | None:
    """The most recently written checkpoint file of the run, if any."""
    paths = set()
    for callback in trainer.checkpoint_callbacks:
        for attribute in ("last_model_path", "best_model_path"):
            path = getattr(callback, attribute, "")
            if path and Path(path).is_file():
                paths.add(path)
    return max(paths, key=lambda p: Path(p).stat().st_mtime) if paths else None


class NonFiniteLossGuard(pl.Callback):
    """Acts on a NaN / infinite training loss, or NaN / infinite gradients, before the optimizer step.

    Lightning's automatic optimisation runs ``training_step`` -> ``on_before_backward(loss)`` ->
    backward -> ``on_before_optimizer_step`` -> (gradient clipping) -> the parameter update ->
    ``on_train_batch_end``.  The guard keeps the loss in ``on_before_backward`` and checks it and
    every gradient in ``on_before_optimizer_step`` (one device synchronisation per step), before
    the weights change, so no checkpoint can hold weights updated from a non-finite loss.

    Args:
        action: ``stop`` raises :class:`NonFiniteLossError` (one line: global step, epoch, batch
            index, the batch's sample indices and pids, the newest checkpoint, which is kept, and
            fixes). ``skip`` drops that batch's update: every gradient is set to None, so SGD and
            Adam leave the weights, their momentum / moment buffers and the weight decay untouched
            for that step; a warning gives the running count, also logged as ``train/skipped_batches``.

    With gradient accumulation the skipped update is the whole accumulated one. Under 16-bit
    mixed precision a GradScaler already skips steps with non-finite gradients (that is how it
    tunes its scale), so only the loss is checked there, and ``skip`` leaves the skipping to it.
    """

    def __init__(self, action: str = "stop") -> None:
        if action not in GUARD_ACTIONS:
            raise ValueError(
                f"callbacks.nonfinite_guard.action must be one of {', '.join(GUARD_ACTIONS)}, got {action!r}"
            )
        self.action = action
        self.skipped_batches = 0
        self._batch: _BatchInfo | None = None
        # (batch, loss) of every backward since the last optimizer step (several with gradient accumulation)
        self._pending: list[tuple[_BatchInfo | None, torch.Tensor]] = []

    # ------------------------------------------------------------------ hooks
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Remembers the batch index and the batch's ``index`` / ``pid`` entries for the message."""
        # kept as references; turned into lists only when a message needs them
        indices = pids = None
        if isinstance(batch, dict):
            indices, pids = batch.get("index"), batch.get("pid")
        self._batch = _BatchInfo(batch_idx, indices, pids)

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor) -> None:
        """Keeps the loss (no device synchronisation here); it is checked before the optimizer step."""
        self._pending.append((self._batch, loss.detach()))

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        """Checks the losses since the last step and every gradient; stops or drops the update if any is not finite."""
        pending, self._pending = self._pending, []
        scaled = getattr(trainer.precision_plugin, "scaler", None) is not None
        checks = [torch.isfinite(loss).all() for _, loss in pending]
        if not scaled:
            checks += [torch.isfinite(p.grad).all() for p in pl_module.parameters() if p.grad is not None]
        if not checks:
            return
        # one device synchronisation per step for the losses and the whole model's gradients
        if bool(torch.stack([c.to(checks[0].device) for c in checks]).all()):
            return
        bad = [(batch, float(loss.float().cpu())) for batch, loss in pending if not bool(torch.isfinite(loss).all())]
        if bad:
            batch, value = bad[0]
            what = f"non-finite training loss ({value})"
        else:
            batch, what = (pending[-1][0] if pending else self._batch), "non-finite gradients"
        if self.action == "stop":
            raise NonFiniteLossError(self._message(trainer, what, batch))
        if not scaled:  # the GradScaler skips the step itself, and refuses an optimizer without gradients
            for group in optimizer.param_groups:
                for parameter in group["params"]:
                    parameter.grad = None
        self.skipped_batches += 1
        log.warning(
            "%s at global step %d, epoch %d, batch %s: skipped this update (%d skipped so far; "
            "callbacks.nonfinite_guard.action=skip)",
            what,
            trainer.global_step,
            trainer.current_epoch,
            batch.batch_idx if batch else "?",
            self.skipped_batches,
        )

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Logs the running count of skipped updates (``skip`` only)."""
        if self.action == "skip":
            pl_module.log("train/skipped_batches", float(self.skipped_batches), on_step=True, on_epoch=False)

    # ------------------------------------------------------------------ resuming
    def state_dict(self) -> dict[str, Any]:
        """The skip count, kept in checkpoints so that a resumed run goes on counting."""
        return {"skipped_batches": self.skipped_batches}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restores the skip count of a resumed run."""
        self.skipped_batches = int(state_dict.get("skipped_batches", 0))

    # ------------------------------------------------------------------ message
    @staticmethod
    def _message(trainer: pl.Trainer, what: str, batch: _BatchInfo | None) -> str:
        checkpoint = _newest_checkpoint(trainer)
        kept = f"the last good checkpoint {checkpoint} is kept" if checkpoint else "no checkpoint had been written yet"
        where = "batch ?"
        if batch is not None:
            where = (
                f"batch {batch.batch_idx} (sample indices {_named_values(_tensor_list(batch.indices))}, "
                f"pids {_named_values(_tensor_list(batch.pids))})"
            )
        return (
            f"{what} at global step {trainer.global_step}, epoch {trainer.current_epoch}, {where}; "
            f"training stopped before the weights were updated and {kept}; fix: lower the learning rate "
            "(model.optimizer.lr), enable gradient clipping (trainer.gradient_clip_val=5.0), "
            "or skip such batches (callbacks.nonfinite_guard.action=skip)"
        )


class TrainThroughput(pl.Callback):
    """Logs ``train/images_per_s``: training images per second of wall time over each epoch, all processes.

    The time runs from the epoch's first batch to its end, less any validation in between (the
    GPU synchronised at each mark), so it includes waiting for the loader: compare it with
    ``reid.tools.bench``'s pure compute rate to see whether the loader keeps up.
    """

    def __init__(self) -> None:
        self.started: float | None = None
        self.validating_since: float | None = None
        self.validation_seconds = 0.0
        self.images = 0
        self.last: float | None = None

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.started is not None:
            self.validating_since = self._now(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.validating_since is not None:
            self.validation_seconds += self._now(trainer) - self.validating_since
            self.validating_since = None

    @staticmethod
    def _now(trainer: pl.Trainer) -> float:
        import time

        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize(trainer.strategy.root_device)
        return time.perf_counter()

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.started is None:
            self.started, self.images, self.validation_seconds = self._now(trainer), 0, 0.0

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        size = batch["pid"].shape[0] if isinstance(batch, dict) and "pid" in batch else 0
        self.images += int(size) * trainer.world_size

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.started is None or self.images == 0:
            return
        seconds = self._now(trainer) - self.started - self.validation_seconds
        self.last = self.images / max(seconds, 1e-9)
        self.started = None
        pl_module.log("train/images_per_s", self.last, rank_zero_only=True)
        log.info(
            "epoch %d: %.1f training images/s (%d images in %.1f s)",
            trainer.current_epoch,
            self.last,
            self.images,
            seconds,
        )
