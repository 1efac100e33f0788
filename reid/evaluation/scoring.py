"""Scoring test-time features: CMC/mAP/mINP per Table 7 row, re-ranking, a data module's query/gallery,
the results table."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from reid.errors import ReidError
from reid.evaluation.features import ROW_LABELS, FeatureSet, extract_features
from reid.metrics import evaluate_features, evaluate_rank, pairwise_distance, re_ranking
from reid.names import PART_NAMES, RANK_METRICS  # noqa: F401 - PART_NAMES re-exported (dashboard, reports)

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


#: where visibility-aware matching takes each part's visibility: inter-attention's weights or the keypoints
VISIBILITY_SOURCES = ("mu", "keypoints")


def visibility_scores(
    features: FeatureSet,
    *,
    source: str = "mu",
    distance: str = "euclidean",
    max_rank: int = 50,
    **protocol_kw: Any,
) -> dict[str, Any]:
    """Scores the global and part features compared by :func:`reid.metrics.visibility.visibility_distance`.

    ``source``: ``mu`` (inter-attention's part weights, stored beside the features) or
    ``keypoints`` (the mean keypoint confidence of each part's joints).

    Raises:
        VisibilityMatchingError: the set lacks the per-part features or the chosen visibilities.
    """
    from reid.metrics.visibility import visibility_distance

    if source not in VISIBILITY_SOURCES:
        raise VisibilityMatchingError(f"eval.visibility_matching={source!r}: choose none, mu or keypoints")
    visibility = features.part_weights if source == "mu" else features.part_confidence
    missing = [row for row in ("global", *PART_NAMES) if row not in features.features]
    if visibility is None or missing:
        what = (
            f"the per-branch features {missing} (score with eval.branches=true)"
            if missing
            else ("part weights: the model has no inter-attention" if source == "mu" else "keypoint confidences")
        )
        raise VisibilityMatchingError(
            f"eval.visibility_matching={source}: the features hold no {what}; choose "
            f"{'keypoints' if source == 'mu' else 'mu'} or none"
        )
    q, g = features.query, features.gallery
    parts = torch.stack([features.features[name] for name in PART_NAMES], dim=1)
    distmat = visibility_distance(
        features.features["global"][q],
        features.features["global"][g],
        parts[q],
        parts[g],
        visibility[q],
        visibility[g],
        metric=distance,
    )
    return _scored(distmat.numpy(), features, max_rank, **protocol_kw)


def _scored(distmat: Any, features: FeatureSet, max_rank: int, **protocol_kw: Any) -> dict[str, Any]:
    """One row's result from a (queries x gallery) distance matrix of ``features``."""
    q, g = features.query, features.gallery
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
    return _ranked(cmc, mean_ap, minp, max_rank)


def _ranked(cmc: Any, mean_ap: float, minp: float, max_rank: int) -> dict[str, Any]:
    """One row's result as :func:`score_features` gives it, from :func:`reid.metrics.evaluate_rank`'s."""
    out: dict[str, Any] = {"cmc": cmc, "mAP": mean_ap, "mINP": minp}
    for k in (1, 5, 10, 20):
        out[f"rank{k}"] = float(cmc[k - 1]) if k <= max_rank else math.nan
    return out


class VisibilityMatchingError(ReidError, ValueError):
    """``eval.visibility_matching`` asked of features that cannot carry it."""


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
    return _scored(distmat, features, max_rank, **protocol_kw)


def plain_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """The scalar metrics of one row (no CMC array) as floats, for JSON."""
    return {k: float(result[k]) for k in METRIC_NAMES if k in result}


@dataclass(frozen=True)
class ScoringOptions:
    """How query and gallery features are compared and scored: built once from the ``eval`` group.

    Every place that scores (validation's :class:`reid.metrics.ReIDMetric`, ``evaluate.py``,
    the cross-dataset sets, the attention knockout) reads these from here, not from ``cfg.eval``.
    """

    distance: str = "euclidean"
    max_rank: int = 50
    chunk_size: int | None = 1024
    num_repeats: int = 10  # CUHK03 single-shot: gallery samplings averaged
    seed: int = 0
    exact: bool = False
    flip: bool = False

    @classmethod
    def from_config(cls, eval_cfg: Mapping[str, Any]) -> ScoringOptions:
        """From the ``eval`` group (a DictConfig or a mapping); absent keys take the defaults above."""
        chunk = eval_cfg.get("chunk_size", cls.chunk_size)
        return cls(
            distance=str(eval_cfg.get("distance", cls.distance)),
            max_rank=int(eval_cfg.get("max_rank", cls.max_rank)),
            chunk_size=None if chunk is None else int(chunk),
            num_repeats=int(eval_cfg.get("cuhk03_repeats", cls.num_repeats)),
            seed=int(eval_cfg.get("cuhk03_seed", cls.seed)),
            exact=bool(eval_cfg.get("cuhk03_exact", cls.exact)),
            flip=bool(eval_cfg.get("flip", cls.flip)),
        )

    def protocol_kwargs(self) -> dict[str, Any]:
        """The CUHK03 single-shot options of :func:`score_features` and :func:`rerank_scores`."""
        return {"num_repeats": self.num_repeats, "seed": self.seed, "exact": self.exact}

    def score_kwargs(self) -> dict[str, Any]:
        """The keyword options of :func:`score_features`."""
        return {
            "distance": self.distance,
            "max_rank": self.max_rank,
            "chunk_size": self.chunk_size,
            **self.protocol_kwargs(),
        }

    def metric_kwargs(self, protocol: str) -> dict[str, Any]:
        """The keyword options of :class:`reid.metrics.ReIDMetric` (stored in checkpoints as ``eval_options``)."""
        return {
            "metric": self.distance,
            "max_rank": self.max_rank,
            "protocol": protocol,
            "chunk_size": self.chunk_size,
            **self.protocol_kwargs(),
        }


def score_datamodule(
    module: nn.Module, datamodule: Any, eval_options: Mapping[str, Any], device: torch.device | str
) -> dict[str, float]:
    """Rank-1, mAP... of ``module``'s test feature (Table 7's ``all`` row) on a data module's query/gallery."""
    options = ScoringOptions.from_config(eval_options)
    eval_set = datamodule.eval_set
    features = extract_features(
        module,
        datamodule.val_dataloader(),
        paths=[r.image_path for r in eval_set.records],
        protocol=datamodule.dataset.protocol,
        flip=options.flip,
        device=device,
        rows=["all"],
    )
    return plain_metrics(score_features(features, rows=["all"], **options.score_kwargs())["all"])


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
