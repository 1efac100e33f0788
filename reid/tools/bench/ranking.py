"""Ranking: CMC + mAP + mINP on a random Market-sized problem and on a large gallery of random features.

Usage::

    reid-bench ranking                     # python -m reid.tools.bench.ranking
    reid-bench ranking threads=1 large_gallery=500000 repeats=5

Prints seconds and peak memory of :func:`reid.metrics.rank.evaluate_rank` on a random distance
matrix with Market-1501's sizes (3,368 queries x 15,913 gallery, 751 ids, 6 cameras), on one
thread and on torch's, against a plain per-query NumPy reference (timed on ``reference_queries``
queries and extrapolated), then :func:`reid.metrics.rank.evaluate_features` on ``large_gallery``
random features. The figures measured on this project's machines are in docs/benchmarks.md.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

from reid.conf.tool import option, run_tool
from reid.metrics.distance import squared_euclidean
from reid.metrics.rank import evaluate_features, evaluate_rank


def market_sized_problem(
    seed: int, num_query: int = 3368, num_gallery: int = 15913, num_ids: int = 751, num_cams: int = 6
) -> tuple[np.ndarray, ...]:
    """A random distance matrix (float32) with Market-1501's sizes, ids and cameras."""
    rng = np.random.default_rng(seed)
    return (
        rng.random((num_query, num_gallery), dtype=np.float32),
        rng.integers(0, num_ids, num_query),
        rng.integers(0, num_ids, num_gallery),
        rng.integers(0, num_cams, num_query),
        rng.integers(0, num_cams, num_gallery),
    )


def numpy_reference(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int = 50,
) -> tuple[np.ndarray, float]:
    """The plain per-query NumPy evaluation (torchreid's Python path, with a stable sort)."""
    indices = np.argsort(distmat, axis=1, kind="stable")
    all_cmc, all_ap = [], []
    for q in range(distmat.shape[0]):
        order = indices[q]
        keep = ~((g_pids[order] == q_pids[q]) & (g_camids[order] == q_camids[q]))
        raw = (g_pids[order][keep] == q_pids[q]).astype(np.int64)
        if not raw.any():
            continue
        cum = raw.cumsum()
        all_cmc.append(np.minimum(cum, 1)[:max_rank])
        all_ap.append((cum / np.arange(1.0, raw.size + 1) * raw).sum() / raw.sum())
    return np.mean(all_cmc, 0), float(np.mean(all_ap))


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


_T = TypeVar("_T")


def _timed(fn: Callable[[], _T], repeats: int) -> tuple[float, _T]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    assert out is not None, "repeats must be at least 1"
    return best, out


@dataclass
class RankingOptions:
    """The options of ``reid-bench ranking`` (``key=value``)."""

    seed: int = option(0, "seed of the random problems")
    repeats: int = option(3, "timings keep the best of this many runs", low=1)
    reference_queries: int = option(300, "queries timed for the NumPy reference (extrapolated to all queries)", low=1)
    large_gallery: int = option(100_000, "gallery size of the large case", low=1)
    dim: int = option(768, "feature dimension of the large case", low=1)
    threads: int | None = option(None, "torch intra-op threads (default: torch's)", low=1)


def bench(options: RankingOptions) -> int:
    """Prints seconds and peak memory of the ranking metrics on a Market-sized problem and a large gallery."""
    if options.threads:
        torch.set_num_threads(options.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
        f"1-min load average {load:.2f}; peak RSS after imports {peak_rss_mib():.0f} MiB"
    )

    distmat, q_pids, g_pids, q_camids, g_camids = market_sized_problem(options.seed)
    num_q, num_g = distmat.shape
    print(f"[market-sized] {num_q} queries x {num_g} gallery, 751 ids, 6 cameras, random float32 distances")
    # num_threads=1 is evaluate_rank's default; None runs the ranking on torch's thread setting
    for num_threads, repeats in ((1, options.repeats), (None, 1)):

        def ranked(bound_threads: int | None = num_threads) -> tuple[np.ndarray, float, float]:
            # the loop's num_threads bound when the function is made (B023)
            return evaluate_rank(
                distmat, q_pids, g_pids, q_camids, g_camids, 50, return_minp=True, num_threads=bound_threads
            )

        seconds, (cmc, mean_ap, minp) = _timed(ranked, repeats)
        threads = num_threads or torch.get_num_threads()
        print(
            f"  evaluate_rank (CMC+mAP+mINP), {threads} thread(s): {seconds:.3f} s (best of {repeats}); "
            f"rank1={cmc[0]:.5f} mAP={mean_ap:.6f} mINP={minp:.6f}; peak RSS so far {peak_rss_mib():.0f} MiB"
        )

    n_ref = min(options.reference_queries, num_q)
    ref_seconds, (ref_cmc, ref_ap) = _timed(
        lambda: numpy_reference(distmat[:n_ref], q_pids[:n_ref], g_pids, q_camids[:n_ref], g_camids), 1
    )
    sub_cmc, sub_ap = evaluate_rank(distmat[:n_ref], q_pids[:n_ref], g_pids, q_camids[:n_ref], g_camids, 50)
    agree = max(float(np.abs(sub_cmc - ref_cmc).max()), abs(sub_ap - ref_ap))
    print(
        f"  NumPy per-query reference: {ref_seconds:.3f} s on {n_ref} queries -> "
        f"~{ref_seconds * num_q / n_ref:.1f} s extrapolated to {num_q} (linear in queries); "
        f"max |difference| from evaluate_rank on those queries {agree:.1e}"
    )
    distmat = np.empty((0, 0), np.float32)  # free the Market-sized matrix before the large-gallery case

    rng = np.random.default_rng(options.seed + 1)
    g_large = options.large_gallery
    print(
        f"[large gallery] {num_q} queries x {g_large} gallery, features of dim {options.dim} (float32), "
        f"squared Euclidean, distances computed per query block on {torch.get_num_threads()} thread(s), "
        f"ranking on 1"
    )
    q_feats = torch.from_numpy(rng.standard_normal((num_q, options.dim), dtype=np.float32))
    g_feats = torch.from_numpy(rng.standard_normal((g_large, options.dim), dtype=np.float32))
    g_pids_large = rng.integers(0, 751, g_large)
    g_cams_large = rng.integers(0, 6, g_large)
    seconds, out = _timed(
        lambda: evaluate_features(q_feats, g_feats, q_pids, g_pids_large, q_camids, g_cams_large, max_rank=50), 1
    )
    print(
        f"  evaluate_features: {seconds:.3f} s; rank1={out['rank1']:.5f} mAP={out['mAP']:.6f}; "
        f"peak RSS so far {peak_rss_mib():.0f} MiB "
        f"(features alone: {(q_feats.numel() + g_feats.numel()) * 4 / 2**20:.0f} MiB)"
    )
    block = max(1, (1 << 25) // g_large)  # evaluate_features' default query block
    g_sqnorm = g_feats.pow(2).sum(1)
    block_seconds, _ = _timed(lambda: squared_euclidean(q_feats[:block], g_feats, g_sqnorm), 1)
    print(
        f"  of which distances take about {block_seconds * num_q / block:.1f} s "
        f"(one {block}-query block timed and scaled)"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``reid-bench ranking`` / ``python -m reid.tools.bench.ranking``."""
    return run_tool(bench, RankingOptions, "bench ranking", argv)


if __name__ == "__main__":
    raise SystemExit(main())
