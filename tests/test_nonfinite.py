"""NonFiniteLossGuard: a NaN loss or gradient stops training before the update, or that update is skipped."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import nn
from torch.utils.data import DataLoader

from reid import tasks as runner
from reid.lit.callbacks import NonFiniteLossError, NonFiniteLossGuard

BATCH_SIZE = 4
NUM_SAMPLES = 16  # 4 batches per epoch
BAD_STEP = 5  # epoch 1, batch 1: samples 4..7


class TinyModule(pl.LightningModule):
    """A linear classifier whose loss (or gradient) turns NaN at one optimizer step."""

    def __init__(self, bad_step: int | None = None, spoil: str = "loss") -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layer = nn.Linear(4, 3)
        self.bad_step = bad_step
        self.spoil = spoil

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self.layer(batch["x"])
        loss = F.cross_entropy(logits, batch["pid"])
        if self.global_step == self.bad_step:
            if self.spoil == "loss":
                loss = loss * float("nan")
            else:  # finite loss, NaN gradients
                logits.register_hook(lambda grad: grad * float("nan"))
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # momentum and weight decay would move the weights even with a zero gradient
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)


class Snapshots(pl.Callback):
    """The weights and momentum buffers after every training batch, in order."""

    def __init__(self) -> None:
        self.after: list[dict[str, Any]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        optimizer = trainer.optimizers[0]
        self.after.append(
            {
                "params": [p.detach().clone() for p in pl_module.parameters()],
                "momentum": [optimizer.state[p]["momentum_buffer"].clone() for p in pl_module.parameters()],
            }
        )


def _loader() -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    samples = [{"x": torch.randn(4, generator=generator), "pid": i % 3, "index": i} for i in range(NUM_SAMPLES)]
    return DataLoader(samples, batch_size=BATCH_SIZE, shuffle=False)


def _trainer(tmp_path: Path, *callbacks: pl.Callback, **options) -> pl.Trainer:
    settings = dict(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=list(callbacks),
        enable_checkpointing=any(isinstance(c, pl.callbacks.ModelCheckpoint) for c in callbacks),
    )
    settings.update(options)
    return pl.Trainer(**settings)


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("spoil", ["loss", "gradients"])
def test_stop_raises_before_the_update_naming_step_epoch_batch_and_samples(tmp_path, spoil):
    module, snapshots = TinyModule(BAD_STEP, spoil), Snapshots()
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "checkpoints", filename="last", monitor=None)
    trainer = _trainer(tmp_path, NonFiniteLossGuard("stop"), snapshots, checkpoint)
    with pytest.raises(NonFiniteLossError) as info:
        trainer.fit(module, train_dataloaders=_loader())
    message = str(info.value)
    what = "non-finite training loss (nan)" if spoil == "loss" else "non-finite gradients"
    assert message.startswith(f"{what} at global step {BAD_STEP}, epoch 1, batch 1 ")
    assert "sample indices [4, 5, 6, 7], pids [1, 2, 0, 1]" in message
    written = tmp_path / "checkpoints" / "last.ckpt"
    assert f"the last good checkpoint {written} is kept" in message
    assert "lower the learning rate" in message and "trainer.gradient_clip_val" in message
    assert "callbacks.nonfinite_guard.action=skip" in message and "\n" not in message
    # the weights are those after the last good step, and the epoch-0 checkpoint holds finite weights
    assert len(snapshots.after) == BAD_STEP
    assert _same(list(p.detach() for p in module.parameters()), snapshots.after[-1]["params"])
    state = torch.load(written, weights_only=True)["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values())
    assert state["layer.weight"].ne(module.layer.weight.detach()).any()  # written at the end of epoch 0


@pytest.mark.parametrize("spoil", ["loss", "gradients"])
def test_skip_drops_only_that_update_momentum_and_weight_decay_included(tmp_path, spoil, caplog):
    module, snapshots, guard = TinyModule(BAD_STEP, spoil), Snapshots(), NonFiniteLossGuard("skip")
    trainer = _trainer(tmp_path, guard, snapshots, logger=pl.loggers.CSVLogger(tmp_path), log_every_n_steps=1)
    with caplog.at_level(logging.WARNING, logger="reid.lit.callbacks"):
        trainer.fit(module, train_dataloaders=_loader())
    assert trainer.state.finished and len(snapshots.after) == 2 * NUM_SAMPLES // BATCH_SIZE
    before, after = snapshots.after[BAD_STEP - 1], snapshots.after[BAD_STEP]
    assert _same(before["params"], after["params"]) and _same(before["momentum"], after["momentum"])
    nxt = snapshots.after[BAD_STEP + 1]  # training goes on afterwards
    assert not _same(after["params"], nxt["params"])
    assert all(torch.isfinite(p).all() for p in module.parameters())
    assert guard.skipped_batches == 1
    assert trainer.callback_metrics["train/skipped_batches"].item() == 1.0
    assert f"at global step {BAD_STEP}, epoch 1, batch 1: skipped this update (1 skipped so far" in caplog.text
    assert guard.state_dict() == {"skipped_batches": 1}


def test_finite_training_is_left_alone(tmp_path):
    guarded, plain = TinyModule(), TinyModule()
    guard = NonFiniteLossGuard("stop")
    _trainer(tmp_path, guard).fit(guarded, train_dataloaders=_loader())
    _trainer(tmp_path).fit(plain, train_dataloaders=_loader())
    assert _same(list(guarded.parameters()), list(plain.parameters())) and guard.skipped_batches == 0


def test_unknown_action_is_refused():
    with pytest.raises(ValueError, match="callbacks.nonfinite_guard.action must be one of stop, skip"):
        NonFiniteLossGuard("ignore")


def test_the_default_callbacks_stop_a_reid_run_on_a_nan_loss(make_cfg):
    cfg = make_cfg("callbacks=default", "trainer.max_epochs=1")
    assert cfg.callbacks.nonfinite_guard.action == "stop"
    guard = instantiate(cfg.callbacks.nonfinite_guard)
    assert isinstance(guard, NonFiniteLossGuard)
    datamodule = runner.build_datamodule(cfg)
    model = runner.build_model(cfg, datamodule.num_classes, datamodule.dataset.protocol)
    seen: list[dict[str, torch.Tensor]] = []
    training_step = model.training_step

    def nan_at_second_step(batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        seen.append(batch)
        loss = training_step(batch, batch_idx)
        return loss * math.nan if model.global_step == 1 else loss

    model.training_step = nan_at_second_step
    trainer = instantiate(cfg.trainer, callbacks=[guard], logger=False, enable_checkpointing=False)
    weights_before = None

    class Keep(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            nonlocal weights_before
            weights_before = [p.detach().clone() for p in pl_module.parameters()]

    trainer.callbacks.append(Keep())
    with pytest.raises(NonFiniteLossError) as info:
        trainer.fit(model, datamodule=datamodule)
    bad = seen[-1]
    indices, pids = bad["index"].tolist(), bad["pid"].tolist()
    assert f"at global step 1, epoch 0, batch 1 (sample indices {indices}, pids {pids})" in str(info.value)
    assert "no checkpoint had been written yet" in str(info.value)
    assert _same([p.detach() for p in model.parameters()], weights_before)
