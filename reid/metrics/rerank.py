"""k-reciprocal re-ranking of a query x gallery distance matrix (Zhong et al., CVPR 2017).

The paper's steps, on the set of all queries and gallery images together:

1. ``N(p, k)``: the k nearest neighbours of p. Here they include p itself, so ``N(p, k)`` holds
   the k + 1 nearest samples (as the authors' code does); ties in distance go to the smaller index.
2. k-reciprocal neighbours ``R(p, k) = {g in N(p, k) : p in N(g, k)}``.
3. Expansion: for every ``q in R(p, k)``, add ``R(q, round(k/2))`` to ``R*(p, k)`` when
   ``|R(p, k) & R(q, k/2)| >= 2/3 |R(q, k/2)|`` (the paper's ">="; ``strict_expansion=True``
   gives ">" as in the authors' code).
4. Gaussian-kernel weights ``V[p, g] = exp(-d(p, g))`` for ``g in R*(p, k)``, else 0. The paper
   does not fix the scale of d; by default (``kernel_normalize=True``) each row of d is divided by
   its maximum first, and each row of V is normalised to sum to one, as in the authors' code.
5. Local query expansion: V[p] is replaced by the mean of V over ``N(p, k2)`` (with p itself).
6. Jaccard distance ``d_J(p, g) = 1 - sum_j min(V[p, j], V[g, j]) / sum_j max(V[p, j], V[g, j])``.
7. Final distance ``(1 - lambda) d_J + lambda d``, with d the distance given (so ``lambda=1``
   returns it unchanged; the authors' code blends a squared, row-normalised copy instead).
"""

from __future__ import annotations

import logging

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

logger = logging.getLogger(__name__)


def _as_matrix(x: npt.ArrayLike, name: str) -> np.ndarray:
    """A float numpy array from a numpy array or a torch tensor (on any device).

    float32 stays float32: the combined (Q+G)^2 matrix of a Market-sized problem is 1.5 GB so.
    """
    if hasattr(x, "detach"):  # torch tensor, without importing torch here
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    arr = arr.astype(np.float32 if arr.dtype in (np.float16, np.float32) else np.float64, copy=False)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D distance matrix, got shape {arr.shape}")
    if np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN distances")
    return arr


def nearest_neighbours(dist: np.ndarray, k: int, block_rows: int | None = None) -> np.ndarray:
    """Indices of the k smallest entries of each row, ordered by (distance, column index).

    Deterministic under ties (unlike ``argpartition``) without sorting whole rows; rows are
    processed `block_rows` at a time (default: about 2**22 entries per block).
    """
    n_rows, n_cols = dist.shape
    k = min(k, n_cols)
    block_rows = block_rows or max(1, (1 << 22) // max(n_cols, 1))
    out = np.empty((n_rows, k), dtype=np.int64)
    for start in range(0, n_rows, block_rows):
        rows = dist[start : start + block_rows]
        kth = np.partition(rows, k - 1, axis=1)[:, k - 1 : k]
        below = rows < kth
        at_kth = rows == kth
        room = k - below.sum(1, keepdims=True)
        chosen = below | (at_kth & (np.cumsum(at_kth, axis=1) <= room))
        cols = np.nonzero(chosen)[1].reshape(len(rows), k)  # ascending column order per row
        order = np.argsort(np.take_along_axis(rows, cols, 1), axis=1, kind="stable")
        out[start : start + len(rows)] = np.take_along_axis(cols, order, 1)
    return out


def _reciprocal(neighbours: np.ndarray, n: int) -> sp.csr_matrix:
    """Boolean sparse R with R[p, g] = g in N(p) and p in N(g)."""
    rows = np.repeat(np.arange(n), neighbours.shape[1])
    a = sp.csr_matrix((np.ones(rows.size, dtype=np.int32), (rows, neighbours.ravel())), shape=(n, n))
    return a.multiply(a.T).tocsr()


def re_ranking(
    q_g_dist: npt.ArrayLike,
    q_q_dist: npt.ArrayLike,
    g_g_dist: npt.ArrayLike,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    *,
    kernel_normalize: bool = True,
    strict_expansion: bool = False,
) -> np.ndarray:
    """Re-rank with k-reciprocal encoding (see the module docstring for each step and choice).

    Args:
        q_g_dist: (Q, G) query-gallery distances (numpy arrays or torch tensors).
        q_q_dist: (Q, Q) query-query distances.
        g_g_dist: (G, G) gallery-gallery distances.
        k1: k of the k-reciprocal neighbours.
        k2: neighbours averaged by local query expansion (1 disables it).
        lambda_value: weight of the original distance in the final one.
        kernel_normalize: divide each row of distances by its maximum before the kernel.
        strict_expansion: use ">" instead of the paper's ">=" in the 2/3 expansion rule.

    Returns:
        (Q, G) float64 array of re-ranked distances.
    """
    if k1 < 1 or k2 < 1:
        raise ValueError(f"k1 and k2 must be >= 1, got k1={k1}, k2={k2}")
    if not 0.0 <= lambda_value <= 1.0:
        raise ValueError(f"lambda_value must lie in [0, 1], got {lambda_value}")
    q_g = _as_matrix(q_g_dist, "q_g_dist")
    q_q = _as_matrix(q_q_dist, "q_q_dist")
    g_g = _as_matrix(g_g_dist, "g_g_dist")
    num_q, num_g = q_g.shape
    if q_q.shape != (num_q, num_q) or g_g.shape != (num_g, num_g):
        raise ValueError(
            f"q_g_dist is {q_g.shape}, so q_q_dist must be {(num_q, num_q)} and g_g_dist "
            f"{(num_g, num_g)}; got {q_q.shape} and {g_g.shape}"
        )
    dist = np.block([[q_q, q_g], [q_g.T, g_g]])  # float32 only if all three are
    n = num_q + num_g

    row_max = dist.max(1).astype(np.float64) if kernel_normalize else np.ones(n)
    row_scale = 1.0 / np.where(row_max > 0, row_max, 1.0)

    half = int(np.around(k1 / 2.0))
    neighbours = nearest_neighbours(dist, max(k1, half, k2 - 1) + 1)
    recip = _reciprocal(neighbours[:, : k1 + 1], n)
    recip_half = _reciprocal(neighbours[:, : half + 1], n)
    # overlap[p, q] = |R(p, k1) & R(q, k1/2)|, needed only where q is in R(p, k1)
    overlap = recip.multiply(recip @ recip_half.T).tocoo()
    half_size = np.asarray(recip_half.sum(1)).ravel()
    rows, cols, counts = overlap.row, overlap.col, overlap.data
    keep = 3 * counts > 2 * half_size[cols] if strict_expansion else 3 * counts >= 2 * half_size[cols]
    accepted = sp.csr_matrix((np.ones(keep.sum()), (rows[keep], cols[keep])), shape=(n, n))
    expanded = ((recip + accepted @ recip_half) > 0).tocsr()

    r, c = expanded.nonzero()
    weights = np.exp(-dist[r, c].astype(np.float64) * row_scale[r])
    v = sp.csr_matrix((weights, (r, c)), shape=(n, n))
    v = sp.diags(1.0 / np.asarray(v.sum(1)).ravel()) @ v
    if k2 > 1:
        qe_rows = np.repeat(np.arange(n), k2)
        averaging = sp.csr_matrix(
            (np.full(qe_rows.size, 1.0 / k2), (qe_rows, neighbours[:, :k2].ravel())), shape=(n, n)
        )
        v = (averaging @ v).tocsr()
    v.eliminate_zeros()

    jaccard = _jaccard(v[:num_q].tocsr(), v[num_q:].tocsc(), num_g)
    logger.debug(
        "re-ranked %d queries against %d gallery images (k1=%d, k2=%d, lambda=%g)", num_q, num_g, k1, k2, lambda_value
    )
    return (1.0 - lambda_value) * jaccard + lambda_value * q_g.astype(np.float64)


def _jaccard(v_query: sp.csr_matrix, v_gallery: sp.csc_matrix, num_g: int) -> np.ndarray:
    """Weighted Jaccard distance between every query row and every gallery row of V."""
    gallery_total = np.asarray(v_gallery.sum(1)).ravel()
    out = np.empty((v_query.shape[0], num_g))
    indptr = v_gallery.indptr
    for i in range(v_query.shape[0]):
        lo, hi = v_query.indptr[i], v_query.indptr[i + 1]
        cols, vals = v_query.indices[lo:hi], v_query.data[lo:hi]
        # every gallery entry stored in the query's non-zero columns, gathered in one go
        starts, lengths = indptr[cols], indptr[cols + 1] - indptr[cols]
        offsets = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())
        shared_min = np.minimum(v_gallery.data[offsets], np.repeat(vals, lengths))
        min_sum = np.bincount(v_gallery.indices[offsets], weights=shared_min, minlength=num_g)
        max_sum = vals.sum() + gallery_total - min_sum
        out[i] = 1.0 - min_sum / max_sum
    return out
