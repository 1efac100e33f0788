"""A torchmetrics Metric that gathers query/gallery features (across processes too) and reports CMC/mAP/mINP."""

from __future__ import annotations

import logging
from typing import Any

import torch
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

from reid.metrics.distance import check_metric
from reid.metrics.rank import PROTOCOLS, evaluate_features

logger = logging.getLogger(__name__)


class ReIDMetric(Metric):
    """Re-ID retrieval metric over one evaluation pass (query and gallery images mixed in batches).

    Each ``update`` adds a batch of features with their ids, cameras, whether they are queries,
    and their index within their split (query or gallery). ``compute`` gathers every process's
    states (list states with ``dist_reduce_fx="cat"``: each process concatenates its list, the
    tensors are all-gathered and concatenated), drops repeated samples (a DistributedSampler
    pads the last batches by repeating samples) by their (is_query, index) key, orders each
    split by index so that results do not depend on how samples were spread over processes, and
    ranks the gallery with :func:`reid.metrics.rank.evaluate_features`. Every process must have
    seen at least one batch before a synced ``compute`` (a DistributedSampler ensures it).

    Args:
        metric: ``"euclidean"`` (squared) or ``"cosine"`` feature distance.
        protocol: ``"market"`` or ``"cuhk03"``.
        max_rank: length of the CMC.
        chunk_size: queries per distance block (default: automatic, see evaluate_features).
        **protocol_kw: ``num_repeats``, ``seed``, ``exact``, ``num_buckets``, ``num_threads``; any other keyword
            (``sync_on_compute``, ``process_group``...) goes to ``torchmetrics.Metric``.

    After ``compute``, ``gathered`` holds the deduplicated ``features``, ``pids``, ``camids`` and
    ``is_query`` (queries first, each split in index order) until the next ``compute``.

    ``compute`` returns a dict of tensors: ``rank1``, ``rank5``, ``rank10``, ``rank20``, ``mAP``,
    ``mINP`` (0-d float tensors, fractions, NaN where undefined) and ``cmc`` (1-d tensor; leave it
    out when passing the dict to ``LightningModule.log_dict``, which takes scalars only).
    """

    higher_is_better = True
    full_state_update = False
    is_differentiable = False

    # metric states (add_state in __init__): lists of batches, each one tensor after a distributed sync
    features: list[torch.Tensor]
    pids: list[torch.Tensor]
    camids: list[torch.Tensor]
    is_query: list[torch.Tensor]
    indices: list[torch.Tensor]

    def __init__(
        self,
        metric: str = "euclidean",
        protocol: str = "market",
        max_rank: int = 50,
        chunk_size: int | None = None,
        **protocol_kw: Any,
    ) -> None:
        allowed = {"num_repeats", "seed", "exact", "num_buckets", "num_threads"}
        metric_kw = {k: protocol_kw.pop(k) for k in list(protocol_kw) if k not in allowed}
        super().__init__(**metric_kw)
        check_metric(metric)
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown evaluation protocol {protocol!r}; use one of {PROTOCOLS}")
        self.distance = metric
        self.protocol = protocol
        self.max_rank = max_rank
        self.chunk_size = chunk_size
        self.protocol_kw = protocol_kw
        for name in ("features", "pids", "camids", "is_query", "indices"):
            self.add_state(name, default=[], dist_reduce_fx="cat")
        self.gathered: dict[str, torch.Tensor] = {}

    def update(
        self,
        features: torch.Tensor,
        pids: torch.Tensor,
        camids: torch.Tensor,
        is_query: torch.Tensor,
        indices: torch.Tensor,
    ) -> None:
        """Add a batch.

        Args:
            features: (N, d) embeddings.
            pids, camids: (N,) integer ids.
            is_query: (N,) bool, True for query images, False for gallery images.
            indices: (N,) index of each sample within its own split.
        """
        if features.dim() != 2:
            raise ValueError(f"features must be (N, d), got shape {tuple(features.shape)}")
        n = features.shape[0]
        for name, t in (("pids", pids), ("camids", camids), ("is_query", is_query), ("indices", indices)):
            if t.dim() != 1 or t.shape[0] != n:
                raise ValueError(f"{name} must have shape ({n},) to match features, got {tuple(t.shape)}")
        self.features.append(features.detach())
        self.pids.append(pids.detach().long())
        self.camids.append(camids.detach().long())
        # int64 rather than bool: gloo cannot all-gather bool tensors
        self.is_query.append(is_query.detach().long())
        self.indices.append(indices.detach().long())

    def compute(self) -> dict[str, torch.Tensor]:
        """Evaluate everything gathered so far (see the class docstring)."""
        # after a distributed sync each state is one tensor rather than a list
        gathered = self.features
        if (len(gathered) == 0) if isinstance(gathered, list) else gathered.numel() == 0:
            raise ValueError("ReIDMetric.compute() called before any update(): no features were gathered")
        features = dim_zero_cat(self.features)
        pids, camids = dim_zero_cat(self.pids).long(), dim_zero_cat(self.camids).long()
        is_query, indices = dim_zero_cat(self.is_query).long(), dim_zero_cat(self.indices).long()

        # key orders queries before gallery and each split by index; unique() returns keys sorted
        key = is_query.eq(0).long() * (int(indices.max()) + 1) + indices
        unique_keys, inverse = torch.unique(key, return_inverse=True)
        first = torch.full((unique_keys.numel(),), key.numel(), dtype=torch.long, device=key.device)
        first.scatter_reduce_(0, inverse, torch.arange(key.numel(), device=key.device), reduce="amin")
        repeated = key.numel() - unique_keys.numel()
        if repeated:
            logger.debug("dropped %d repeated samples (distributed padding)", repeated)
            if not (torch.equal(pids, pids[first][inverse]) and torch.equal(camids, camids[first][inverse])):
                raise ValueError(
                    "the same (is_query, index) sample was seen with different pids or camids: "
                    "indices must number the samples of each split uniquely"
                )
        features, pids, camids, is_query = features[first], pids[first], camids[first], is_query[first].bool()
        if not bool(is_query.any()) or bool(is_query.all()):
            raise ValueError(
                f"ReIDMetric needs both query and gallery samples; got {int(is_query.sum())} "
                f"queries and {int((~is_query).sum())} gallery images"
            )
        # kept for pictures and per-branch tables after compute (queries first, each split in index order)
        self.gathered = {"features": features, "pids": pids, "camids": camids, "is_query": is_query}
        result = evaluate_features(
            features[is_query],
            features[~is_query],
            pids[is_query],
            pids[~is_query],
            camids[is_query],
            camids[~is_query],
            metric=self.distance,
            max_rank=self.max_rank,
            protocol=self.protocol,
            chunk_size=self.chunk_size,
            device=features.device,
            **self.protocol_kw,
        )
        out = {k: torch.tensor(v, dtype=torch.float32, device=self.device) for k, v in result.items() if k != "cmc"}
        out["cmc"] = torch.as_tensor(result["cmc"], dtype=torch.float32).to(self.device)
        return out
