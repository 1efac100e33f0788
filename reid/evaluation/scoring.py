"""Scoring test-time features: CMC/mAP/mINP per Table 7 row, re-ranking, a data module's query/gallery, the results table."""

from __future__ import annotations

import logging
import math
from typing import Any, Iterable, Mapping

import torch
from torch import nn

from reid.errors import ReidError
from reid.metrics import evaluate_features, evaluate_rank, pairwise_distance, re_ranking
from reid.names import PART_NAMES, RANK_METRICS  # noqa: F401 - PART_NAMES re-exported (dashboard, reports)
from reid.evaluation.features import FeatureSet, ROW_LABELS, extract_features


log = logging.getLogger(__name__)


METRIC_NAMES = RANK_METRICS


class RerankTooLargeError(ReidError, MemoryError):
    """Re-ranking a set whose (Q+G)^2 distance matrices would not fit the configured bound."""


def score_features(
    features: FeatureSet,
    *,
    rows: Iterable[str] | None = None,
    distance: str = "euclidean",
    max_rank: int = 50,
    chunk_size: int | None = None,
    device: torch.device | str | None = None,
    **protocol_kw: Any,
) -> dict[str, dict[str, Any]]:
    """CMC/mAP/mINP of each Table 7 row (``rows``, default: every row the set holds).

    Returns ``{row: {"rank1": ..., "mAP": ..., "mINP": ..., "cmc": np.ndarray}}`` (fractions).
    """
    q, g = features.query, features.gallery
    results: dict[str, dict[str, Any]] = {}
    for row in rows or features.features:
        feats = features.features[row]
        results[row] = evaluate_features(
            feats[q],
            feats[g],
            features.pids[q],
            features.pids[g],
            features.camids[q],
            features.camids[g],
            metric=distance,
            max_rank=max_rank,
            protocol=features.protocol,
            chunk_size=chunk_size,
            device=device,
            **protocol_kw,
        )
    return results


def rerank_scores(
    features: FeatureSet,
    *,
    row: str = "all",
    distance: str = "euclidean",
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    max_images: int = 40_000,
    max_rank: int = 50,
    **protocol_kw: Any,
) -> dict[str, Any]:
    """Scores ``row`` after k-reciprocal re-ranking (Zhong et al. 2017, :func:`reid.metrics.re_ranking`).

    Re-ranking needs every pairwise distance of queries and gallery together, (Q + G)^2 floats:
    sets larger than ``max_images`` are refused with the memory they would take, rather than
    being killed by the OS half-way.
    """
    q, g = features.query, features.gallery
    total = len(q) + len(g)
    if total > max_images:
        gib = total * total * 4 * 3 / 2**30
        raise RerankTooLargeError(
            f"re-ranking {total} images needs about {gib:.0f} GiB ((Q+G)^2 distances); raise eval.rerank_max_images "
            "if the machine has it, or set eval.rerank=false"
        )
    feats = features.features[row]
    qf, gf = feats[q], feats[g]
    distmat = re_ranking(
        pairwise_distance(qf, gf, distance).numpy(),
        pairwise_distance(qf, qf, distance).numpy(),
        pairwise_distance(gf, gf, distance).numpy(),
        k1=k1,
        k2=k2,
        lambda_value=lambda_value,
    )
    cmc, mean_ap, minp = evaluate_rank(
        distmat,
        features.pids[q],
        features.pids[g],
        features.camids[q],
        features.camids[g],
        max_rank=max_rank,
        protocol=features.protocol,
        return_minp=True,
        **protocol_kw,
    )
    out: dict[str, Any] = {"cmc": cmc, "mAP": mean_ap, "mINP": minp}
    for k in (1, 5, 10, 20):
        out[f"rank{k}"] = float(cmc[k - 1]) if k <= max_rank else math.nan
    return out


def plain_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """The scalar metrics of one row (no CMC array) as floats, for JSON."""
    return {k: float(result[k]) for k in METRIC_NAMES if k in result}


def scoring_options(eval_options: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword options of :func:`score_features` from the ``eval`` config group (a mapping)."""
    return {
        "distance": str(eval_options.get("distance", "euclidean")),
        "max_rank": int(eval_options.get("max_rank", 50)),
        "chunk_size": eval_options.get("chunk_size"),
        "num_repeats": int(eval_options.get("cuhk03_repeats", 10)),
        "seed": int(eval_options.get("cuhk03_seed", 0)),
        "exact": bool(eval_options.get("cuhk03_exact", False)),
    }


def score_datamodule(
    module: nn.Module, datamodule: Any, eval_options: Mapping[str, Any], device: torch.device | str
) -> dict[str, float]:
    """Rank-1, mAP... of ``module``'s test feature (Table 7's ``all`` row) on a data module's query/gallery."""
    eval_set = datamodule.eval_set
    features = extract_features(
        module,
        datamodule.val_dataloader(),
        paths=[r.image_path for r in eval_set.records],
        protocol=datamodule.dataset.protocol,
        flip=bool(eval_options.get("flip", False)),
        device=device,
        rows=["all"],
    )
    return plain_metrics(score_features(features, rows=["all"], **scoring_options(eval_options))["all"])


def results_table(results: Mapping[str, Mapping[str, Any]]) -> str:
    """A Markdown table with one line per Table 7 row (and re-ranked rows), values in percent."""
    columns = [("R1", "rank1"), ("R5", "rank5"), ("R10", "rank10"), ("R20", "rank20"), ("mAP", "mAP"), ("mINP", "mINP")]
    lines = ["| Features | " + " | ".join(c for c, _ in columns) + " |", "|---|" + "---:|" * len(columns)]
    for row, result in results.items():
        label = ROW_LABELS.get(row, row.replace("_", " "))
        cells = []
        for _, key in columns:
            value = result.get(key)
            cells.append(
                "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.2f}"
            )
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
