"""Visibility-aware matching: part distances weighted by both images' part visibilities and normalised
(VPM, PGFA, BPBReID)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from reid.metrics.distance import pairwise_distance


def visibility_distance(
    global_query: Tensor,
    global_gallery: Tensor,
    parts_query: Tensor,
    parts_gallery: Tensor,
    visibility_query: Tensor,
    visibility_gallery: Tensor,
    metric: str = "euclidean",
) -> Tensor:
    """``(d_g + sum_i w_i d_i) / (1 + sum_i w_i)`` with ``w_i = v_i(query) v_i(gallery)``, for every pair.

    Each branch's features are L2-normalised first, so that the global and the part distances
    are on one scale; a part hidden in either image (visibility 0) then counts for nothing and
    the pair is compared on what both show, the global feature always included.

    Args:
        global_query, global_gallery: (Q, d) and (G, d) global features.
        parts_query, parts_gallery: (Q, 4, d') and (G, 4, d') part features.
        visibility_query, visibility_gallery: (Q, 4) and (G, 4) in [0, 1] (inter-attention's mu,
            or the keypoints' confidence per part); NaN counts as 0.
        metric: ``euclidean`` (squared) or ``cosine`` distance (:func:`reid.metrics.pairwise_distance`).

    Returns:
        (Q, G) float32 distances.
    """
    if parts_query.dim() != 3 or parts_gallery.dim() != 3 or parts_query.shape[1] != visibility_query.shape[1]:
        raise ValueError(
            f"parts must be (N, P, d) with one visibility per part, got {tuple(parts_query.shape)} and "
            f"{tuple(visibility_query.shape)}"
        )
    v_q = torch.nan_to_num(visibility_query.float()).clamp(0, 1)
    v_g = torch.nan_to_num(visibility_gallery.float()).clamp(0, 1)
    total = pairwise_distance(
        F.normalize(global_query.float(), dim=1), F.normalize(global_gallery.float(), dim=1), metric
    ).float()
    weights = torch.ones_like(total)
    for part in range(parts_query.shape[1]):
        w = v_q[:, part, None] * v_g[None, :, part]
        d = pairwise_distance(
            F.normalize(parts_query[:, part].float(), dim=1), F.normalize(parts_gallery[:, part].float(), dim=1), metric
        ).float()
        total = total + w * d
        weights = weights + w
    return total / weights
