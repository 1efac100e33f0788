"""The Market-1501 ranking kernel: the 1-based rank of every true match of each query, without sorting the gallery.

Ordering rule everywhere: the gallery is ranked by distance, ties broken by gallery index (what a
stable sort gives), so results are deterministic and equal to a per-query
``np.argsort(kind="stable")`` reference.

How the Market protocol avoids sorting: the rank of a true match is one plus the number of valid
gallery entries ordered before it. Each row of a distance chunk is cut into equal-width buckets
between its minimum and maximum (a monotone map), a per-row histogram of the buckets counts every
entry lying in a lower bucket than a true match, and only the few entries that share a bucket with
some true match are compared exactly. The result is exact whatever the bucket width; the width
only changes the speed.

The gallery grouping (:class:`_Gallery`) and the true matches (:func:`_true_matches`) are shared with
the CUHK03 scoring (:mod:`reid.metrics.cuhk03`); the public functions are in :mod:`reid.metrics.rank`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class _Gallery:
    """The gallery's ids grouped by identity, computed once per evaluation."""

    pids: torch.Tensor  # (G,) int64
    camids: torch.Tensor  # (G,) int64
    by_identity: torch.Tensor  # (G,) gallery indices sorted by (pid, index)
    group_pids: torch.Tensor  # (P,) sorted distinct pids
    group_start: torch.Tensor  # (P,) offset of each identity in `by_identity`
    group_size: torch.Tensor  # (P,) images per identity
    group_of: torch.Tensor  # (G,) identity number of each gallery entry

    @classmethod
    def build(cls, pids: torch.Tensor, camids: torch.Tensor) -> _Gallery:
        by_identity = torch.sort(pids, stable=True).indices
        group_pids, group_of, group_size = torch.unique(pids, return_inverse=True, return_counts=True)
        group_start = torch.cumsum(group_size, 0) - group_size
        return cls(pids, camids, by_identity, group_pids, group_start, group_size, group_of)

    @property
    def size(self) -> int:
        return int(self.pids.numel())

    def identity_of(self, q_pids: torch.Tensor) -> torch.Tensor:
        """Identity number of each query pid in the gallery, -1 when the gallery lacks it."""
        pos = torch.searchsorted(self.group_pids, q_pids).clamp_(max=self.group_pids.numel() - 1)
        return torch.where(self.group_pids[pos] == q_pids, pos, torch.full_like(pos, -1))


@dataclass
class _Matches:
    """Per query of a chunk: its true matches sorted by (distance, gallery index)."""

    own: torch.Tensor  # (B,) identity number of the query in the gallery, -1 if absent
    same_index: torch.Tensor  # (B, L) gallery indices of the query's identity (padded)
    same_mask: torch.Tensor  # (B, L) which of them are real
    value: torch.Tensor  # (B, M) distances of the true matches, ascending
    index: torch.Tensor  # (B, M) their gallery indices
    count: torch.Tensor  # (B,) number of true matches
    slot: torch.Tensor  # (B, M) which slots are real


def _true_matches(dist: torch.Tensor, gallery: _Gallery, q_pids: torch.Tensor, q_camids: torch.Tensor) -> _Matches:
    """Gallery entries of each query's identity, and among them the true matches (other cameras)."""
    dev = dist.device
    own = gallery.identity_of(q_pids)
    present = own >= 0
    own_c = own.clamp(min=0)
    n_same = torch.where(present, gallery.group_size[own_c], 0)
    width = int(n_same.max()) if n_same.numel() else 0
    cols = torch.arange(max(width, 1), device=dev)
    same_mask = cols < n_same[:, None]
    pos = (gallery.group_start[own_c][:, None] + cols).clamp_(max=gallery.size - 1)
    same_index = gallery.by_identity[pos]
    is_match = same_mask & (gallery.camids[same_index] != q_camids[:, None])
    count = is_match.sum(1)
    m = int(count.max()) if count.numel() else 0
    same_dist = dist.gather(1, same_index)
    # Two stable sorts = one lexicographic sort by (not a match, distance, gallery index): slots
    # within an identity are already in gallery-index order.
    by_dist = torch.sort(torch.where(is_match, same_dist, math.inf), dim=1, stable=True).indices
    matches_first = torch.sort((~is_match).gather(1, by_dist).to(torch.uint8), dim=1, stable=True).indices
    order = by_dist.gather(1, matches_first)[:, :m]
    slot = torch.arange(m, device=dev) < count[:, None]
    return _Matches(own, same_index, same_mask, same_dist.gather(1, order), same_index.gather(1, order), count, slot)


class _Workspace:
    """Reusable scratch buffers: allocating a fresh multi-MB tensor per step costs page faults
    that take longer than the arithmetic done in it."""

    def __init__(self) -> None:
        self._buffers: dict[tuple, torch.Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        numel = math.prod(shape)
        key = (name, dtype, device)
        buf = self._buffers.get(key)
        if buf is None or buf.numel() < numel:
            buf = torch.empty(numel, dtype=dtype, device=device)
            self._buffers[key] = buf
        return buf[:numel].view(shape)


def _row_buckets(dist: torch.Tensor, num_buckets: int, workspace: _Workspace | None = None) -> torch.Tensor:
    """Map each row monotonically onto integer buckets 0..num_buckets (equal width, min to max).

    Rows without a usable finite span (all equal, overflow) put everything in bucket 0, which
    only makes the exact comparison step do all the work. Non-finite values are clamped to the
    row's finite range, which keeps the map monotone.
    """
    workspace = workspace or _Workspace()
    lo, hi = dist.amin(1), dist.amax(1)  # both propagate NaN; faster than aminmax on CPU
    if bool(torch.isnan(lo).any() | torch.isnan(hi).any()):
        raise ValueError("the distance matrix contains NaN; check the features for NaN/inf before evaluating")
    values = dist
    if not bool(torch.isfinite(lo).all() & torch.isfinite(hi).all()):
        finite = torch.isfinite(dist)
        lo = torch.where(finite, dist, math.inf).amin(1)
        hi = torch.where(finite, dist, -math.inf).amax(1)
        no_finite = ~torch.isfinite(lo)
        lo = torch.where(no_finite, 0.0, lo)
        hi = torch.where(no_finite, 0.0, hi)
        values = torch.clamp(dist, lo[:, None], hi[:, None])
    span = hi - lo
    scale = num_buckets / span
    usable = torch.isfinite(scale) & torch.isfinite(span) & (span > 0)
    scaled = torch.sub(values, lo[:, None], out=workspace.get("scaled", dist.shape, dist.dtype, dist.device))
    if bool(usable.all()):
        scaled.mul_(scale[:, None])
    else:
        scaled = torch.where(usable[:, None], scaled * torch.where(usable, scale, 0.0)[:, None], 0.0)
    buckets = workspace.get("buckets", dist.shape, torch.int64, dist.device)
    return buckets.copy_(scaled)  # float -> int copy truncates, like .to(torch.int64)


def _match_ranks(
    dist: torch.Tensor,
    gallery: _Gallery,
    q_pids: torch.Tensor,
    q_camids: torch.Tensor,
    num_buckets: int | None = None,
    workspace: _Workspace | None = None,
) -> tuple[torch.Tensor, _Matches]:
    """1-based rank of every true match among the valid gallery entries of its query.

    `dist` must be contiguous (entries are addressed by flat index).

    Returns:
        ranks: (B, M) int64, meaningful where ``matches.slot``; matches: the sorted true matches.
    """
    b, g = dist.shape
    dev = dist.device
    matches = _true_matches(dist, gallery, q_pids, q_camids)
    m = matches.value.shape[1]
    if m == 0:
        return torch.zeros(b, 0, dtype=torch.int64, device=dev), matches
    workspace = workspace or _Workspace()
    k = num_buckets if num_buckets is not None else _default_buckets(g)
    spare = k + 1  # bucket that holds entries of the query's own identity, which never count
    buckets = _row_buckets(dist, k, workspace)
    match_bucket = torch.where(matches.slot, buckets.gather(1, matches.index), spare)
    rows, cols = matches.same_mask.nonzero(as_tuple=True)
    buckets.view(-1).index_fill_(0, rows * g + matches.same_index[rows, cols], spare)

    hist = torch.zeros(b, k + 2, dtype=torch.int64, device=dev)
    hist.scatter_add_(1, buckets, torch.ones((), dtype=torch.int64, device=dev).expand(b, g))
    below = (hist.cumsum(1) - hist).gather(1, match_bucket)

    flagged = torch.zeros(b, k + 2, dtype=torch.bool, device=dev)
    flagged.scatter_(1, match_bucket, True)
    flagged[:, spare] = False
    padded = workspace.get("shared", (-(-b * g // 8) * 8,), torch.bool, dev)
    padded[b * g :] = False
    torch.gather(flagged, 1, buckets, out=padded[: b * g].view(b, g))
    flat = _sparse_nonzero(padded)
    same_bucket_before = _same_bucket_counts(dist, flat, buckets, match_bucket, matches, k + 2)
    ranks = below + same_bucket_before + torch.arange(1, m + 1, device=dev)
    return ranks, matches


def _same_bucket_counts(
    dist: torch.Tensor,
    flat: torch.Tensor,
    buckets: torch.Tensor,
    match_bucket: torch.Tensor,
    matches: _Matches,
    buckets_per_row: int,
) -> torch.Tensor:
    """For each true match, how many of the entries at `flat` (flat indices into `dist`) share its
    bucket and come before it in (distance, gallery index) order.

    A row's matches are sorted, so their buckets are non-decreasing and those sharing entry e's
    bucket form a run [lo, hi) of slots, found by binary search; e comes before the matches of
    the run from some slot `pos` on, so it adds one to slots [pos, hi) (a difference array).
    The work is linear in the entries, times the longest run (usually 1).
    """
    b, g = dist.shape
    m = match_bucket.shape[1]
    dev = dist.device
    rows = torch.arange(b, device=dev)[:, None]
    match_key = (rows * buckets_per_row + match_bucket).view(-1)  # sorted: rows, then buckets
    entry_key = (flat // g) * buckets_per_row + buckets.view(-1).index_select(0, flat)
    lo = torch.searchsorted(match_key, entry_key)
    hi = torch.searchsorted(match_key, entry_key, right=True)
    value, index = matches.value.reshape(-1), matches.index.reshape(-1)
    d, col = dist.view(-1).index_select(0, flat), flat % g
    pos = lo.clone()
    longest = int((hi - lo).max()) if flat.numel() else 0
    for t in range(longest):
        slot = (lo + t).clamp_(max=b * m - 1)
        mv, mi = value.index_select(0, slot), index.index_select(0, slot)
        pos += (lo + t < hi) & ((mv < d) | ((mv == d) & (mi < col)))
    diff = torch.zeros(b * m + 1, dtype=torch.int64, device=dev)
    ones = torch.ones_like(pos)
    diff.index_add_(0, pos, ones).index_add_(0, hi, -ones)
    return diff.cumsum(0)[:-1].view(b, m)


def _sparse_nonzero(mask: torch.Tensor) -> torch.Tensor:
    """Indices of the True entries of a 1-D bool tensor (length a multiple of 8) with few of them.

    Scans 8 flags at a time as one int64 word, which is faster than nonzero() on the bools
    themselves when almost all are False (it reads an eighth of the entries).
    """
    words = mask.view(torch.int64).nonzero().squeeze(1)
    candidates = (words[:, None] * 8 + torch.arange(8, device=mask.device)).view(-1)
    return candidates[mask[candidates]]


def _default_buckets(num_gallery: int) -> int:
    """About 4 gallery entries per bucket for evenly spread distances, within [16, 8192].

    Fewer buckets leave more entries to compare exactly; more make the per-row histograms
    outgrow the cache (measured on Market-sized problems).
    """
    return min(max(num_gallery // 4, 16), 8192)
