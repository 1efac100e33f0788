"""Benchmark of reid-search's ranking: time and peak memory of a top-k search over a large gallery of features.

    python scripts/bench_search.py [--gallery 100000] [--queries 10] [--dim 768] [--chunk 65536]

Random float32 features stand in for a gallery's (the ranking does not care what they are);
peak memory is the process's maximum resident set size, which includes torch itself.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reid.inference.search import topk_search  # noqa: E402


def peak_mib() -> float:
    """The process's peak resident memory so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    """Runs the benchmark and prints one line per measurement."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gallery", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=10)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--chunk", type=int, default=65536)
    parser.add_argument("--topk", type=int, default=10)
    args = parser.parse_args()
    torch.manual_seed(0)
    before = peak_mib()
    gallery = torch.rand(args.gallery, args.dim)
    queries = torch.rand(args.queries, args.dim)
    features_mib = gallery.numel() * 4 / 2**20
    started = time.perf_counter()
    distances, indices = topk_search(queries, gallery, args.topk, args.chunk)
    seconds = time.perf_counter() - started
    search_peak = peak_mib()  # before the check below, whose full ranking takes memory of its own
    full = torch.cdist(queries[:2], gallery).argsort(dim=1)[:, : args.topk]
    assert torch.equal(full, indices[:2]), "chunked search disagrees with the full ranking"
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; gallery {args.gallery} x {args.dim} "
        f"({features_mib:.0f} MiB of features), {args.queries} queries, chunk {args.chunk}, top-{args.topk}"
    )
    print(
        f"search: {seconds:.2f} s; peak RSS {search_peak:.0f} MiB (before the features: {before:.0f} MiB); "
        f"a {args.gallery} x {args.gallery} distance matrix would take {args.gallery**2 * 4 / 2**30:.0f} GiB"
    )


if __name__ == "__main__":
    main()
