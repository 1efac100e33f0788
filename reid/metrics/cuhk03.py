"""Classic CUHK03 single-shot scoring: each query's CMC over one gallery image per identity, sampled or exact.

The public entry point is :func:`reid.metrics.rank.evaluate_rank` (``protocol="cuhk03"``), whose
docstring states the protocol; the gallery grouping and the true matches come from the Market
kernel (:mod:`reid.metrics.market`), with the same tie rule (distance, then gallery index).
"""

from __future__ import annotations

import torch

from reid.metrics.market import _Gallery, _true_matches


def _cuhk03_sampled(
    dist: torch.Tensor,
    gallery: _Gallery,
    q_pids: torch.Tensor,
    q_camids: torch.Tensor,
    uniforms: torch.Tensor,
    max_rank: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Single-shot CMC per query, averaged over repeats; `uniforms` is (B, repeats, identities)."""
    dev = dist.device
    b = dist.shape[0]
    matches = _true_matches(dist, gallery, q_pids, q_camids)
    valid = matches.count > 0
    if not bool(valid.any()):
        return torch.zeros(b, max_rank, dtype=torch.float64, device=dev), valid
    repeats, identities = uniforms.shape[1:]
    size = gallery.group_size.to(uniforms.dtype)
    pick = torch.floor(uniforms * size).to(torch.int64).clamp_(max=gallery.group_size - 1)
    sampled = gallery.by_identity[gallery.group_start + pick]  # (B, R, P)
    own = matches.own.clamp(min=0)
    own_u = uniforms.gather(2, own[:, None, None].expand(b, repeats, 1)).squeeze(2)
    true_pick = torch.floor(own_u * matches.count[:, None]).to(torch.int64)
    true_pick = torch.minimum(true_pick, (matches.count - 1).clamp(min=0)[:, None])
    true_index = matches.index.gather(1, true_pick) if matches.index.shape[1] else torch.zeros_like(true_pick)
    d_s = dist.gather(1, sampled.view(b, -1)).view(b, repeats, identities)
    d_t = dist.gather(1, true_index)[:, :, None]
    before = (d_s < d_t) | ((d_s == d_t) & (sampled < true_index[:, :, None]))
    before &= torch.arange(identities, device=dev) != own[:, None, None]
    rank = 1 + before.sum(2)
    ks = torch.arange(1, max_rank + 1, device=dev)
    cmc = (rank[:, :, None] <= ks).to(torch.float64).mean(1)
    return cmc, valid


def _cuhk03_exact(
    dist: torch.Tensor, gallery: _Gallery, q_pids: torch.Tensor, q_camids: torch.Tensor, max_rank: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Expected single-shot CMC over all samplings (Poisson-binomial DP), per query."""
    dev = dist.device
    b, g = dist.shape
    matches = _true_matches(dist, gallery, q_pids, q_camids)
    valid = matches.count > 0
    m = matches.value.shape[1]
    cmc = torch.zeros(b, max_rank, dtype=torch.float64, device=dev)
    if m == 0:
        return cmc, valid
    identities = gallery.group_pids.numel()
    mv = matches.value[:, :, None]
    before = (dist[:, None, :] < mv) | (
        (dist[:, None, :] == mv) & (torch.arange(g, device=dev) < matches.index[:, :, None])
    )
    counts = torch.zeros(b, m, identities, dtype=torch.float64, device=dev)
    counts.scatter_add_(2, gallery.group_of.expand(b, m, g), before.to(torch.float64))
    p = counts / gallery.group_size.to(torch.float64)
    p[torch.arange(b, device=dev), :, matches.own.clamp(min=0)] = 0.0  # own identity is not a rival
    # dp[..., s] = P(s rival identities are sampled before the true image), s < max_rank
    dp = torch.zeros(b, m, max_rank, dtype=torch.float64, device=dev)
    dp[..., 0] = 1.0
    for j in range(identities):
        pj = p[..., j : j + 1]
        shifted = torch.nn.functional.pad(dp[..., :-1], (1, 0))
        dp = dp * (1.0 - pj) + shifted * pj
    within = dp.cumsum(-1)  # P(rank <= k) at index k - 1
    weights = matches.slot.to(torch.float64) / matches.count.clamp(min=1)[:, None]
    cmc = (within * weights[:, :, None]).sum(1)
    return cmc, valid
