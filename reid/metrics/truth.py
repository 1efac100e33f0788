"""Attention against the truth: how well a mask separates the person from the rest (AUROC), rank agreement.

Pure tensor functions, scored per image and collected by :class:`reid.metrics.attention_health.AttentionHealth`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def mask_auroc(values: Tensor, positive: Tensor) -> Tensor:
    """Per image, the probability that a positive position scores above a negative one (ties count half).

    Args:
        values: (B, n) mask values.
        positive: (B, n) bool, the positions that should score high (the visible person).

    Returns:
        (B,) float64: 1 when every positive position scores above every negative one, 0.5 for a
        constant mask, 0 for the inverse; NaN for an image without positives or negatives.
    """
    if values.shape != positive.shape or values.dim() != 2:
        raise ValueError(
            f"values and positive must both be (B, n), got {tuple(values.shape)} and {tuple(positive.shape)}"
        )
    values = values.detach().double()
    positive = positive.bool()
    out = torch.full((values.shape[0],), math.nan, dtype=torch.float64, device=values.device)
    for i in range(values.shape[0]):
        pos, neg = values[i][positive[i]], values[i][~positive[i]]
        if pos.numel() == 0 or neg.numel() == 0:
            continue
        neg = neg.sort().values
        below = torch.searchsorted(neg, pos, right=False).double()  # negatives strictly below each positive
        ties = torch.searchsorted(neg, pos, right=True).double() - below
        out[i] = (below + 0.5 * ties).sum() / (pos.numel() * neg.numel())
    return out


def truth_on_grid(coverage: Tensor, size: tuple[int, int]) -> Tensor:
    """Which cells of an (h, w) attention map are mostly the visible person: (B, H, W) coverage -> (B, h, w) bool.

    Each cell averages the crop pixels it covers (area resampling); it is the person's when at
    least half of them are.
    """
    pooled = F.adaptive_avg_pool2d(coverage.float().unsqueeze(1), size).squeeze(1)
    return pooled >= 0.5


def _average_ranks(values: Tensor) -> Tensor:
    """Ranks 1..n of ``values`` (1-D), ties given their mean rank."""
    order = values.argsort()
    ranks = torch.empty_like(values, dtype=torch.float64)
    ranks[order] = torch.arange(1, values.numel() + 1, dtype=torch.float64, device=values.device)
    unique, inverse = torch.unique(values, return_inverse=True)
    sums = torch.zeros(unique.numel(), dtype=torch.float64, device=values.device).index_add_(0, inverse, ranks)
    counts = torch.bincount(inverse, minlength=unique.numel()).double()
    return (sums / counts)[inverse]


def spearman(x: Tensor, y: Tensor) -> float:
    """Spearman's rank correlation of two 1-D samples (ties: mean ranks); NaN when either is constant or n < 3.

    Pairs where either value is NaN are left out.
    """
    x, y = x.detach().double().flatten(), y.detach().double().flatten()
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same length, got {x.numel()} and {y.numel()}")
    keep = ~(torch.isnan(x) | torch.isnan(y))
    x, y = x[keep], y[keep]
    if x.numel() < 3:
        return math.nan
    return pearson(_average_ranks(x), _average_ranks(y))


def pearson(x: Tensor, y: Tensor) -> float:
    """Pearson's correlation of two 1-D samples; NaN when either is constant."""
    x, y = x.double().flatten(), y.double().flatten()
    x, y = x - x.mean(), y - y.mean()
    denominator = float(x.norm() * y.norm())
    return float((x * y).sum()) / denominator if denominator > 0 else math.nan


def concordance(x: Tensor, y: Tensor, chunk: int = 1024) -> float:
    """Harrell's concordance index of ``x`` as a predictor of ``y`` (two 1-D samples); NaN without a pair.

    Over every pair whose ``y`` differ, the share that ``x`` orders the same way, ties in ``x``
    counting half: 1 when ``x`` ranks ``y`` perfectly, 0.5 for a constant ``x``, 0 for the inverse.
    Unlike Spearman's rho it ignores the pairs tied in ``y``. Where most parts are wholly visible
    (tied at a share of 1), rho cannot reach 1 for any ``x`` that never ties, while the
    concordance of a perfect hidden-or-not detector is 1. Pairs where either value is NaN are left out.
    """
    x, y = x.detach().double().flatten(), y.detach().double().flatten()
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same length, got {x.numel()} and {y.numel()}")
    keep = ~(torch.isnan(x) | torch.isnan(y))
    x, y = x[keep], y[keep]
    agreement, pairs = 0.0, 0.0
    for start in range(0, x.numel(), chunk):  # chunks bound the n x n sign matrices on large query sets
        dx = torch.sign(x[start : start + chunk, None] - x[None, :])
        dy = torch.sign(y[start : start + chunk, None] - y[None, :])
        agreement += float((dx * dy).sum())
        pairs += float((dy != 0).sum())
    return 0.5 + 0.5 * agreement / pairs if pairs else math.nan
