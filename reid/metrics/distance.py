"""Pairwise distances between feature sets (squared Euclidean or cosine), as re-ID evaluation uses them."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

METRICS = ("euclidean", "cosine")


def as_feature_tensor(x: torch.Tensor | np.ndarray, name: str) -> torch.Tensor:
    """Return `x` as a 2-D floating tensor (float16/bfloat16 are widened to float32).

    Raises:
        ValueError: if `x` is not 2-D.
    """
    t = torch.as_tensor(x)
    if t.dim() != 2:
        raise ValueError(f"{name} must be a 2-D (num_images, dim) array, got shape {tuple(t.shape)}")
    if not t.is_floating_point() or t.dtype in (torch.float16, torch.bfloat16):
        t = t.float()
    return t


def check_metric(metric: str) -> None:
    """Raise a clear error for an unknown distance name."""
    if metric not in METRICS:
        raise ValueError(f"unknown distance metric {metric!r}; use one of {METRICS}")


def pairwise_distance(
    x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray, metric: str = "euclidean"
) -> torch.Tensor:
    """Distances between every row of `x` and every row of `y`.

    ``"euclidean"`` is the *squared* Euclidean distance ``|x|^2 + |y|^2 - 2 x.y``, as torchreid
    and fast-reid compute it; it is deliberately not clamped at zero, so that rounding below
    zero cannot create ties that change the ranking. ``"cosine"`` is ``1 - cos(x, y)``.

    Args:
        x: (m, d) features.
        y: (n, d) features.
        metric: ``"euclidean"`` or ``"cosine"``.

    Returns:
        (m, n) tensor of distances on `x`'s device, float32 unless the inputs are float64.
    """
    check_metric(metric)
    x = as_feature_tensor(x, "x")
    y = as_feature_tensor(y, "y").to(device=x.device)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature dimensions differ: x has {x.shape[1]}, y has {y.shape[1]}")
    dtype = torch.promote_types(x.dtype, y.dtype)
    x, y = x.to(dtype), y.to(dtype)
    if metric == "cosine":
        return 1.0 - F.normalize(x, dim=1) @ F.normalize(y, dim=1).t()
    return squared_euclidean(x, y, y.pow(2).sum(1))


def squared_euclidean(x: torch.Tensor, y: torch.Tensor, y_sqnorm: torch.Tensor) -> torch.Tensor:
    """``|x|^2 + |y|^2 - 2 x.y`` with the gallery norms `y_sqnorm` precomputed (reused per chunk)."""
    dist = x.pow(2).sum(1, keepdim=True) + y_sqnorm.unsqueeze(0)
    return dist.addmm_(x, y.t(), beta=1.0, alpha=-2.0)
