"""Re-ID ranking metrics (CMC, mAP, mINP) under the Market-1501 and classic CUHK03 protocols: the public functions.

:func:`evaluate_rank` ranks a distance matrix, :func:`evaluate_features` computes the distances
one query block at a time; both feed an evaluator that accumulates the per-query results of the
Market ranking kernel (:mod:`reid.metrics.market`) or of the CUHK03 scoring
(:mod:`reid.metrics.cuhk03`). Ordering rule everywhere: the gallery is ranked by distance, ties
broken by gallery index (what a stable sort gives), so results are deterministic and equal to a
per-query ``np.argsort(kind="stable")`` reference.

Threads: on CPU the ranking runs single-threaded by default (``num_threads=1``). It is
memory-bound and made of many short operations; on a shared, busy machine every multi-threaded
operation waits for a descheduled worker (docs/benchmarks.md has the figures). Pass ``num_threads=None``
to keep torch's setting.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal, overload

import numpy as np
import torch

from reid.metrics.cuhk03 import _cuhk03_exact, _cuhk03_sampled
from reid.metrics.distance import as_feature_tensor, check_metric, squared_euclidean
from reid.metrics.market import _Gallery, _match_ranks, _Workspace

logger = logging.getLogger(__name__)

PROTOCOLS = ("market", "cuhk03")
# About this many distance entries are processed at once by the ranking code; it bounds the
# temporaries (int64 bucket ids, masks) to a few tens of MB and keeps them cache-friendly.
_ELEMENTS_PER_STEP = 1 << 20
# Distance entries per block when evaluate_features computes distances (float32: 128 MiB).
_DISTANCE_ELEMENTS_PER_CHUNK = 1 << 25
_REPORTED_RANKS = (1, 5, 10, 20)

IdVector = torch.Tensor | np.ndarray | Sequence[int]
Array = torch.Tensor | np.ndarray


def _as_int_vector(x: IdVector, name: str, device: torch.device) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if t.dim() != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(t.shape)}")
    if (t.is_floating_point() or t.is_complex()) and not bool(torch.all(t == torch.round(t))):
        raise ValueError(f"{name} must hold integer ids, got non-integer values")
    return t.to(device=device, dtype=torch.int64)


class _RankEvaluator:
    """Accumulates per-query results chunk by chunk (queries must arrive in order)."""

    def __init__(
        self,
        g_pids: torch.Tensor,
        g_camids: torch.Tensor,
        *,
        max_rank: int,
        protocol: str,
        num_repeats: int,
        seed: int,
        exact: bool,
        num_buckets: int | None = None,
    ) -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown evaluation protocol {protocol!r}; use one of {PROTOCOLS}")
        if max_rank < 1:
            raise ValueError(f"max_rank must be >= 1, got {max_rank}")
        if protocol == "cuhk03" and not exact and num_repeats < 1:
            raise ValueError(f"num_repeats must be >= 1, got {num_repeats}")
        if g_pids.numel() == 0:
            raise ValueError("the gallery is empty: nothing to rank against")
        self.gallery = _Gallery.build(g_pids, g_camids)
        self.max_rank, self.protocol = max_rank, protocol
        self.num_repeats, self.exact, self.num_buckets = num_repeats, exact, num_buckets
        self.rng = np.random.default_rng(seed)
        self.workspace = _Workspace()
        self.first_rank: list[torch.Tensor] = []
        self.ap: list[torch.Tensor] = []
        self.inp: list[torch.Tensor] = []
        self.cmc_rows: list[torch.Tensor] = []
        self.valid: list[torch.Tensor] = []

    def add(self, dist: torch.Tensor, q_pids: torch.Tensor, q_camids: torch.Tensor) -> None:
        """Evaluate a (B, G) block of distances for B consecutive queries."""
        if not dist.is_floating_point() or dist.dtype in (torch.float16, torch.bfloat16):
            dist = dist.float() if dist.is_floating_point() else dist.double()
        g = self.gallery.size
        per_row = g  # temporaries per query row, in distance entries
        if self.protocol == "cuhk03" and self.exact:
            per_row = g * int(self.gallery.group_size.max())
        elif self.protocol == "cuhk03":
            per_row = max(g, self.num_repeats * self.gallery.group_pids.numel())
        rows = max(1, _ELEMENTS_PER_STEP // per_row)
        for s in range(0, dist.shape[0], rows):
            self._add_step(dist[s : s + rows], q_pids[s : s + rows], q_camids[s : s + rows])

    def _add_step(self, dist: torch.Tensor, q_pids: torch.Tensor, q_camids: torch.Tensor) -> None:
        dist = dist.contiguous()  # a copy only for transposed or strided inputs
        if self.protocol == "market":
            ranks, matches = _match_ranks(dist, self.gallery, q_pids, q_camids, self.num_buckets, self.workspace)
            valid = matches.count > 0
            if ranks.shape[1]:
                slot = matches.slot
                count = matches.count.clamp(min=1).to(torch.float64)
                hits = torch.arange(1, ranks.shape[1] + 1, device=dist.device, dtype=torch.float64)
                precision = torch.where(slot, hits / ranks.to(torch.float64), 0.0)
                self.ap.append((precision.sum(1) / count)[valid].cpu())
                last = ranks.gather(1, (matches.count - 1).clamp(min=0)[:, None]).squeeze(1)
                self.inp.append((matches.count / last.to(torch.float64))[valid].cpu())
                self.first_rank.append(ranks[:, 0][valid].cpu())
        elif self.exact:
            cmc, valid = _cuhk03_exact(dist, self.gallery, q_pids, q_camids, self.max_rank)
            self.cmc_rows.append(cmc[valid].cpu())
        else:
            identities = self.gallery.group_pids.numel()
            draws = self.rng.random((dist.shape[0], self.num_repeats, identities))
            uniforms = torch.from_numpy(draws).to(dist.device)
            cmc, valid = _cuhk03_sampled(dist, self.gallery, q_pids, q_camids, uniforms, self.max_rank)
            self.cmc_rows.append(cmc[valid].cpu())
        self.valid.append(valid.cpu())

    def result(self) -> tuple[np.ndarray, float, float]:
        """(cmc, mAP, mINP) as fractions; mAP and mINP are NaN under the CUHK03 protocol."""
        valid = torch.cat(self.valid) if self.valid else torch.zeros(0, dtype=torch.bool)
        num_valid = int(valid.sum())
        if num_valid == 0:
            raise ValueError(
                f"no query has a true match in the gallery (0 of {valid.numel()} queries; a true match "
                "has the query's pid and another camera): check that query and gallery ids overlap"
            )
        skipped = valid.numel() - num_valid
        if skipped:
            logger.warning(
                "%d of %d queries have no true match in the gallery and were skipped", skipped, valid.numel()
            )
        if self.protocol == "market":
            first = torch.cat(self.first_rank).clamp_(max=self.max_rank + 1)
            hits = torch.bincount(first - 1, minlength=self.max_rank + 1)[: self.max_rank]
            cmc = (torch.cumsum(hits, 0).to(torch.float64) / num_valid).numpy()
            return cmc, float(torch.cat(self.ap).mean()), float(torch.cat(self.inp).mean())
        cmc = torch.cat(self.cmc_rows).mean(0).numpy()
        return cmc, math.nan, math.nan


@contextmanager
def _cpu_threads(num_threads: int | None, device: torch.device) -> Iterator[None]:
    """Run the block with `num_threads` intra-op threads when on CPU (None: leave torch's setting)."""
    previous = torch.get_num_threads()
    if num_threads is None or device.type != "cpu" or num_threads == previous:
        yield
        return
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _check_ids(
    q_pids: IdVector,
    g_pids: IdVector,
    q_camids: IdVector,
    g_camids: IdVector,
    num_q: int,
    num_g: int,
    device: torch.device,
) -> tuple[torch.Tensor, ...]:
    ids = (
        _as_int_vector(q_pids, "q_pids", device),
        _as_int_vector(g_pids, "g_pids", device),
        _as_int_vector(q_camids, "q_camids", device),
        _as_int_vector(g_camids, "g_camids", device),
    )
    names = ("q_pids", "g_pids", "q_camids", "g_camids")
    for t, n, name in zip(ids, (num_q, num_g, num_q, num_g), names, strict=True):
        if t.numel() != n:
            side = "queries" if name.startswith("q") else "gallery images"
            raise ValueError(f"{name} has {t.numel()} entries but there are {n} {side}")
    return ids


@overload
def evaluate_rank(
    distmat: Array,
    q_pids: IdVector,
    g_pids: IdVector,
    q_camids: IdVector,
    g_camids: IdVector,
    max_rank: int = 50,
    protocol: str = "market",
    *,
    num_repeats: int = 10,
    seed: int = 0,
    exact: bool = False,
    return_minp: Literal[False] = False,
    num_buckets: int | None = None,
    num_threads: int | None = 1,
) -> tuple[np.ndarray, float]: ...
@overload
def evaluate_rank(
    distmat: Array,
    q_pids: IdVector,
    g_pids: IdVector,
    q_camids: IdVector,
    g_camids: IdVector,
    max_rank: int = 50,
    protocol: str = "market",
    *,
    num_repeats: int = 10,
    seed: int = 0,
    exact: bool = False,
    return_minp: Literal[True],
    num_buckets: int | None = None,
    num_threads: int | None = 1,
) -> tuple[np.ndarray, float, float]: ...
@overload
def evaluate_rank(
    distmat: Array,
    q_pids: IdVector,
    g_pids: IdVector,
    q_camids: IdVector,
    g_camids: IdVector,
    max_rank: int = 50,
    protocol: str = "market",
    *,
    num_repeats: int = 10,
    seed: int = 0,
    exact: bool = False,
    return_minp: bool = False,
    num_buckets: int | None = None,
    num_threads: int | None = 1,
) -> tuple[np.ndarray, float] | tuple[np.ndarray, float, float]: ...
def evaluate_rank(
    distmat: Array,
    q_pids: IdVector,
    g_pids: IdVector,
    q_camids: IdVector,
    g_camids: IdVector,
    max_rank: int = 50,
    protocol: str = "market",
    *,
    num_repeats: int = 10,
    seed: int = 0,
    exact: bool = False,
    return_minp: bool = False,
    num_buckets: int | None = None,
    num_threads: int | None = 1,
) -> tuple[np.ndarray, float] | tuple[np.ndarray, float, float]:
    """CMC and mAP (and optionally mINP) from a query x gallery distance matrix.

    ``protocol="market"`` (Market-1501, DukeMTMC-reID, CUHK03 767/700): for each query, gallery
    entries with its pid *and* camera are ignored; queries left without a true match are skipped
    (and counted in a warning); CMC(k) = 1 if a true match is within the top k; AP averages, over
    the true matches, (true matches up to it) / (its rank); mINP (fast-reid) averages
    (number of true matches) / (rank of the last one). Distractors (pid 0) are plain negatives.

    ``protocol="cuhk03"`` (classic single shot): after the same removal, one gallery image per
    identity is drawn, the CMC of that single-shot gallery is computed, and this is averaged over
    `num_repeats` draws. The draws use ``np.random.default_rng(seed)``: for each query in order,
    a ``(num_repeats, identities)`` block of uniforms ``u`` picks image ``floor(u * n)`` of each
    identity (of its true matches for the query's own identity). With ``exact=True`` the
    expectation over all draws is returned instead (no sampling): for each true image of the
    query, every other identity ranks before it with probability (its images ordered before the
    true image) / (its images), "ordered before" meaning smaller distance, or equal distance and
    smaller gallery index (the tie rule used everywhere here), and P(rank <= k) follows from the
    Poisson-binomial distribution of their sum. mAP and mINP are NaN for this protocol (the
    classic protocol does not report them).

    Ties in distance are broken by gallery index. CMC has `max_rank` entries even when the
    gallery is smaller (entries past the gallery size are 1), unlike torchreid, which shortens it.

    Args:
        distmat: (Q, G) distances (numpy or torch, any device; computation stays on that device).
        q_pids, g_pids, q_camids, g_camids: integer id vectors of length Q, G, Q, G.
        max_rank: length of the returned CMC.
        protocol: ``"market"`` or ``"cuhk03"``.
        num_repeats: samplings averaged by the CUHK03 protocol.
        seed: seed of the CUHK03 sampling.
        exact: CUHK03 only: return the exact expectation over samplings.
        return_minp: also return mINP.
        num_buckets: Market only, a speed knob: histogram buckets per query row (default
            G // 4 within [16, 8192]); results do not depend on it.
        num_threads: torch intra-op threads while ranking on CPU, restored afterwards (default 1,
            see the module docstring); None keeps torch's current setting.

    Returns:
        ``(cmc, mAP)`` or ``(cmc, mAP, mINP)``: cmc a float64 array of fractions, the others floats.

    Raises:
        ValueError: on mismatched shapes, NaN distances, an unknown protocol, or when no query
            has a true match.
    """
    dist = torch.as_tensor(distmat)
    if dist.dim() != 2:
        raise ValueError(f"distmat must be 2-D (num_query, num_gallery), got shape {tuple(dist.shape)}")
    q_pids, g_pids, q_camids, g_camids = _check_ids(
        q_pids, g_pids, q_camids, g_camids, dist.shape[0], dist.shape[1], dist.device
    )
    evaluator = _RankEvaluator(
        g_pids,
        g_camids,
        max_rank=max_rank,
        protocol=protocol,
        num_repeats=num_repeats,
        seed=seed,
        exact=exact,
        num_buckets=num_buckets,
    )
    with _cpu_threads(num_threads, dist.device):
        evaluator.add(dist, q_pids, q_camids)
    cmc, mean_ap, minp = evaluator.result()
    return (cmc, mean_ap, minp) if return_minp else (cmc, mean_ap)


def evaluate_features(
    q_feats: Array,
    g_feats: Array,
    q_pids: IdVector,
    g_pids: IdVector,
    q_camids: IdVector,
    g_camids: IdVector,
    *,
    metric: str = "euclidean",
    max_rank: int = 50,
    protocol: str = "market",
    chunk_size: int | None = None,
    device: torch.device | str | None = None,
    **protocol_kw: Any,
) -> dict:
    """Rank a gallery for each query from features, computing distances one query block at a time.

    The full query x gallery matrix is never built: each block of `chunk_size` queries is compared
    with the whole gallery (float32, on `device`) and ranked before the next block.

    Args:
        q_feats, g_feats: (Q, d) and (G, d) features.
        q_pids, g_pids, q_camids, g_camids: integer id vectors.
        metric: ``"euclidean"`` (squared, as torchreid) or ``"cosine"`` (1 - cosine similarity).
        max_rank: length of the CMC.
        protocol: ``"market"`` or ``"cuhk03"`` (see :func:`evaluate_rank`).
        chunk_size: queries per distance block; default keeps a block near 2**25 entries (128 MiB).
        device: where distances are computed and ranked (default: where `q_feats` lives).
        **protocol_kw: ``num_repeats``, ``seed``, ``exact``, ``num_buckets``, ``num_threads`` (see
            :func:`evaluate_rank`; the distances themselves use torch's thread setting).

    Returns:
        dict with ``cmc`` (numpy array), ``rank1``, ``rank5``, ``rank10``, ``rank20``, ``mAP``,
        ``mINP`` as fractions; NaN where undefined (ranks beyond `max_rank`; mAP/mINP for cuhk03).
    """
    check_metric(metric)
    allowed = {"num_repeats", "seed", "exact", "num_buckets", "num_threads"}
    unknown = set(protocol_kw) - allowed
    if unknown:
        raise TypeError(f"unknown evaluation options {sorted(unknown)}; allowed: {sorted(allowed)}")
    q = as_feature_tensor(q_feats, "q_feats")
    g = as_feature_tensor(g_feats, "g_feats")
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"query features have dimension {q.shape[1]} but gallery features {g.shape[1]}")
    dev = torch.device(device) if device is not None else q.device
    dtype = torch.float64 if torch.float64 in (q.dtype, g.dtype) else torch.float32
    g = g.to(device=dev, dtype=dtype)
    q_pids, g_pids, q_camids, g_camids = _check_ids(q_pids, g_pids, q_camids, g_camids, q.shape[0], g.shape[0], dev)
    evaluator = _RankEvaluator(
        g_pids,
        g_camids,
        max_rank=max_rank,
        protocol=protocol,
        num_repeats=protocol_kw.get("num_repeats", 10),
        seed=protocol_kw.get("seed", 0),
        exact=protocol_kw.get("exact", False),
        num_buckets=protocol_kw.get("num_buckets"),
    )
    if chunk_size is None:
        chunk_size = max(1, _DISTANCE_ELEMENTS_PER_CHUNK // max(g.shape[0], 1))
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if metric == "cosine":
        g = torch.nn.functional.normalize(g, dim=1)
    else:
        g_sqnorm = g.pow(2).sum(1)
    with torch.no_grad():
        for s in range(0, q.shape[0], chunk_size):
            block = q[s : s + chunk_size].to(device=dev, dtype=dtype)
            if metric == "cosine":
                dist = 1.0 - torch.nn.functional.normalize(block, dim=1) @ g.t()
            else:
                dist = squared_euclidean(block, g, g_sqnorm)
            with _cpu_threads(protocol_kw.get("num_threads", 1), dev):
                evaluator.add(dist, q_pids[s : s + chunk_size], q_camids[s : s + chunk_size])
    cmc, mean_ap, minp = evaluator.result()
    out: dict[str, np.ndarray | float] = {"cmc": cmc}
    for k in _REPORTED_RANKS:
        out[f"rank{k}"] = float(cmc[k - 1]) if k <= max_rank else math.nan
    out["mAP"], out["mINP"] = mean_ap, minp
    return out
