"""The whole training step on each pipeline: loader workers + crops + network, images/s through Lightning's fit.

Usage::

    reid-bench step                                       # both pipelines, paper size, batch 16, 2 workers
    reid-bench step pipelines=[device] steps=20 'overrides=[data.augment.random_erasing=0.5]'

Each pipeline trains ``warmup + steps`` steps of ``train.py``'s configuration (``overrides`` on top)
with ``trainer.fit`` and no validation, logger or checkpoint; images/s is counted over the last
``steps`` steps (from the end of the warm-up's last step to the end of the last step), so loader
start-up and the first steps' allocations are left out. The figures measured on this project's
machines are in docs/benchmarks.md.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from reid.conf.tool import option, run_tool
from reid.errors import ConfigError


@dataclass
class StepOptions:
    """The options of ``reid-bench step`` (``key=value``)."""

    pipelines: list[str] = option(["cpu", "device"], "cpu and/or device (data.pipeline)")
    steps: int = option(10, "timed training steps", low=1)
    warmup: int = option(3, "untimed steps first", low=1)
    batch_size: int = option(16, "images per step", low=1)
    workers: int = option(2, "loader workers (data.num_workers)", low=0)
    size: str = option("paper", "paper (384x192 / 96x192) or demo (128x64 / 32x64)")
    overrides: list[str] = option([], "more train.py overrides (model=..., data.augment....)")


def measure_steps(options: StepOptions, pipeline: str) -> float:
    """Training images/s of one pipeline (see the module doc)."""
    import pytorch_lightning as pl
    from hydra.utils import instantiate
    from omegaconf import open_dict

    from reid.conf import compose_config
    from reid.memory import apply_memory_setting
    from reid.tools.bench.network import SIZES

    whole, part = SIZES[options.size]
    cfg = compose_config(
        [
            f"data.pipeline={pipeline}",
            f"data.batch_size={options.batch_size}",
            f"data.num_workers={options.workers}",
            f"data.whole_size=[{whole[0]},{whole[1]}]",
            f"data.part_size=[{part[0]},{part[1]}]",
            "logger=none",
            "callbacks=none",
            *options.overrides,
        ]
    )
    apply_memory_setting(bool(cfg.retain_freed_memory))  # as train.py
    with open_dict(cfg):
        cfg.trainer.max_steps = options.warmup + options.steps
        cfg.trainer.limit_val_batches = 0
        cfg.trainer.num_sanity_val_steps = 0
        cfg.trainer.enable_checkpointing = False
        cfg.trainer.enable_progress_bar = False
        cfg.trainer.enable_model_summary = False
    ends: list[float] = []

    class StepClock(pl.Callback):
        def on_train_batch_end(self, *args: Any) -> None:
            ends.append(time.perf_counter())

    pl.seed_everything(int(cfg.seed), workers=True)
    datamodule = instantiate(cfg.data, _recursive_=False)
    datamodule.prepare_data()
    datamodule.setup("fit")
    model = instantiate(cfg.model, num_classes=datamodule.num_classes, _convert_="all")
    trainer = pl.Trainer(
        **{k: v for k, v in cfg.trainer.items() if k not in ("_target_",)},
        callbacks=[StepClock()],
        logger=False,
    )
    trainer.fit(model, datamodule=datamodule)
    timed = ends[options.warmup - 1 :]
    return options.batch_size * (len(timed) - 1) / (timed[-1] - timed[0])


def bench(options: StepOptions) -> int:
    """Prints the training images/s of each pipeline."""
    unknown = [p for p in options.pipelines if p not in ("cpu", "device")]
    if unknown or options.size not in ("paper", "demo"):
        raise ConfigError([f"pipelines must be among cpu, device and size paper or demo, got {options}"])
    for pipeline in options.pipelines:
        rate = measure_steps(options, pipeline)
        print(
            f"{pipeline}: {rate:.2f} training images/s ({options.size} size, batch {options.batch_size}, "
            f"{options.workers} workers, {options.steps} steps)"
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``reid-bench step`` / ``python -m reid.tools.bench.step``."""
    return run_tool(bench, StepOptions, "bench step", argv)


if __name__ == "__main__":
    raise SystemExit(main())
