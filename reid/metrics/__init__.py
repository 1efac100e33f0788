"""Re-ID evaluation: ranking metrics (CMC, mAP, mINP), a torchmetrics Metric, and k-reciprocal re-ranking."""

from reid.metrics.distance import pairwise_distance
from reid.metrics.metric import ReIDMetric
from reid.metrics.rank import evaluate_features, evaluate_rank
from reid.metrics.rerank import re_ranking

__all__ = ["evaluate_features", "evaluate_rank", "pairwise_distance", "ReIDMetric", "re_ranking"]
