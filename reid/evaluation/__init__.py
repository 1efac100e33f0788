"""Evaluation of a trained model: features of a data set (Table 7 rows, flip) -> scores (re-ranking) ->
pictures and report.md.

Distinct from :mod:`reid.tools.report`, which tabulates many finished runs (the ablation).
"""

from reid.evaluation.features import FEATURES_FORMAT, ROW_LABELS, FeatureSet, branch_features, extract_features
from reid.evaluation.scoring import (
    METRIC_NAMES,
    PART_NAMES,
    RerankTooLargeError,
    ScoringOptions,
    plain_metrics,
    rerank_scores,
    results_table,
    score_datamodule,
    score_features,
)

__all__ = [
    "FEATURES_FORMAT",
    "METRIC_NAMES",
    "PART_NAMES",
    "ROW_LABELS",
    "FeatureSet",
    "RerankTooLargeError",
    "ScoringOptions",
    "branch_features",
    "extract_features",
    "plain_metrics",
    "rerank_scores",
    "results_table",
    "score_datamodule",
    "score_features",
]
