"""Gallery search: time and peak memory of ``reid-search``'s top-k ranking over a large gallery of random features.

Usage::

    reid-bench search                      # python -m reid.tools.bench.search; 100,000 x 768, 10 queries
    reid-bench search gallery=500000 queries=100 chunk=65536

Random float32 features stand in for a gallery's (the ranking does not care what they are);
peak memory is the process's maximum resident set size, which includes torch itself. The
figures measured on this project's machines are in docs/benchmarks.md.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from reid.conf.tool import option, run_tool
from reid.inference.search import topk_search


def peak_mib() -> float:
    """The process's peak resident memory so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class SearchBenchOptions:
    """The options of ``reid-bench search`` (``key=value``)."""

    gallery: int = option(100_000, "gallery images (random features)", low=1)
    queries: int = option(10, "query images", low=1)
    dim: int = option(768, "feature dimension", low=1)
    chunk: int = option(65536, "gallery rows compared at a time", low=1)
    topk: int = option(10, "matches kept per query", low=1)


def bench(options: SearchBenchOptions) -> int:
    """Prints the seconds and peak memory of one top-k search, checked against the full ranking."""
    torch.manual_seed(0)
    before = peak_mib()
    gallery = torch.rand(options.gallery, options.dim)
    queries = torch.rand(options.queries, options.dim)
    features_mib = gallery.numel() * 4 / 2**20
    started = time.perf_counter()
    distances, indices = topk_search(queries, gallery, options.topk, options.chunk)
    seconds = time.perf_counter() - started
    search_peak = peak_mib()  # before the check below, whose full ranking takes memory of its own
    full = torch.cdist(queries[:2], gallery).argsort(dim=1)[:, : options.topk]
    assert torch.equal(full, indices[:2]), "chunked search disagrees with the full ranking"
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; gallery {options.gallery} x {options.dim} "
        f"({features_mib:.0f} MiB of features), {options.queries} queries, chunk {options.chunk}, top-{options.topk}"
    )
    print(
        f"search: {seconds:.2f} s; peak RSS {search_peak:.0f} MiB (before the features: {before:.0f} MiB); "
        f"a {options.gallery} x {options.gallery} distance matrix would take {options.gallery**2 * 4 / 2**30:.0f} GiB"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``reid-bench search`` / ``python -m reid.tools.bench.search``."""
    return run_tool(bench, SearchBenchOptions, "bench search", argv)


if __name__ == "__main__":
    raise SystemExit(main())
