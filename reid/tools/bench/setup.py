"""The data module's set-up: what ``data.verify_images`` adds to it.

Usage::

    reid-bench setup                                   # python -m reid.tools.bench setup; the default synthetic set
    reid-bench setup repeats=3 'overrides=[data.options.preset=hard]'

The data set is generated first (``prepare_data``, not timed); then ``setup("fit")`` of a fresh
data module is timed in wall time for each ``data.verify_images`` mode, the fastest of
``repeats``: ``decode`` decodes every image once on a thread pool, ``header`` reads only the
headers. ``setup`` also reads the keypoints and computes every image's regions, which both modes
share. The figures measured on this project's machines are in docs/benchmarks.md.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from reid.conf.tool import option, run_tool
from reid.errors import ConfigError

MODES = ("decode", "header")


@dataclass
class SetupOptions:
    """The options of ``reid-bench setup`` (``key=value``)."""

    modes: list[str] = option(list(MODES), "data.verify_images modes to time")
    repeats: int = option(3, "set-ups timed per mode (the fastest is kept)", low=1)
    overrides: list[str] = option([], "other changes to the training config, e.g. [data.options.preset=hard]")


def setup_seconds(overrides: Sequence[str], mode: str, repeats: int) -> tuple[float, int]:
    """(seconds of the fastest set-up, images set up) with ``data.verify_images=mode``."""
    from hydra.utils import instantiate

    from reid.conf import compose_config

    cfg = compose_config([*overrides, f"data.verify_images={mode}", "logger=none", "callbacks=none"])
    instantiate(cfg.data, _recursive_=False).prepare_data()  # generates the synthetic set once, untimed
    best, images = float("inf"), 0
    for _ in range(repeats):
        datamodule = instantiate(cfg.data, _recursive_=False)
        start = time.perf_counter()
        datamodule.setup("fit")
        best = min(best, time.perf_counter() - start)
        images = len(datamodule.train_set) + len(datamodule.eval_set)
    return best, images


def bench(options: SetupOptions) -> int:
    """Prints the data module's set-up time for each ``data.verify_images`` mode."""
    unknown = [mode for mode in options.modes if mode not in MODES]
    if unknown:
        raise ConfigError([f"unknown mode {unknown[0]!r} (fix: modes from {', '.join(MODES)})"])
    seconds = {}
    for mode in options.modes:
        seconds[mode], images = setup_seconds(options.overrides, mode, options.repeats)
        print(f"data.verify_images={mode}: set-up {seconds[mode]:.2f} s for {images:,} images")
    if set(MODES) <= seconds.keys():
        extra = seconds["decode"] - seconds["header"]
        print(f"decoding every image adds {extra:.2f} s ({1e4 * extra / images:.2f} s per 10,000 images)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``reid-bench setup`` / ``python -m reid.tools.bench setup``."""
    return run_tool(bench, SetupOptions, "bench setup", argv)


if __name__ == "__main__":
    raise SystemExit(main())
