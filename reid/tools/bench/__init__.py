"""The benchmarks, one module each: network throughput, data loading, ranking, gallery search, synthetic truth.

``reid-bench [key=value ...]`` measures the networks (:mod:`reid.tools.bench.network`);
``reid-bench <benchmark> [key=value ...]`` runs one by name (``python -m reid.tools.bench <benchmark>``
is the same), each with ``--help``:

* ``network``: training and inference images/s of each network and of a ResNet-50;
* ``convs``: where a network's training step goes, each convolution timed alone against the core's
  matrix-multiply rate;
* ``loader``: a loader worker's CPU time and bytes per image on each pipeline (``data.pipeline``);
* ``setup``: the data module's set-up time with each ``data.verify_images`` mode;
* ``step``: the whole training step's images/s (loader workers, crops, network) on each pipeline;
* ``ranking``: CMC + mAP + mINP on a random Market-sized problem and on a large gallery;
* ``search``: time and peak memory of ``reid-search``'s top-k ranking over a large gallery;
* ``truth``: what the synthetic truth costs a validation pass and the attention figures.

They print what they measure; the figures measured on this project's machines, each with its
date and command, are in docs/benchmarks.md.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from reid.conf.tool import usage
from reid.tools.bench.network import (
    SIZES,
    BenchOptions,
    BenchRow,
    bench,
    distinct_networks,
    format_table,
    measure,
    run,
)

BENCHMARKS = ("network", "convs", "loader", "setup", "step", "ranking", "search", "truth")
"""The benchmarks by name: the modules of this package that ``reid-bench <name>`` runs."""


def main(argv: Sequence[str] | None = None) -> int:
    """``reid-bench [benchmark] [key=value ...]``: the named benchmark (default ``network``).

    Returns the exit status.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    name = args.pop(0) if args and args[0] in BENCHMARKS else "network"
    if name == "network" and any(arg in ("-h", "--help") for arg in args):
        print(usage(BenchOptions, "bench", bench))
        print(f"\nother benchmarks: reid-bench {{{','.join(BENCHMARKS[1:])}}} [key=value ...] (each with --help)")
        return 0
    return int(importlib.import_module(f"reid.tools.bench.{name}").main(args))


__all__ = [
    "BENCHMARKS",
    "SIZES",
    "BenchOptions",
    "BenchRow",
    "distinct_networks",
    "format_table",
    "main",
    "measure",
    "run",
]
