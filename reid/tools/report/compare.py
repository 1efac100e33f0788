"""The paper's numbers beside the measured ones: which report rows are which paper result, and the table of both.

A report row (model, λ, β, data set) is a paper result when the data sets are the same, λ and β
are the paper's (within float noise), and the networks are the same: the row's model, with the
network options its label names (``intra_inter[model.net.decompose=False]``), has the crops and
every network option of the paper row's model with the options it names. So
``aligned[model.net.fusion=inter]`` is Table 6's ``inter``, and ``intra[model.net.fusion=fc]`` is not
Table 9's FC fusion (which has no intra-attention). A label that changes anything else (the loss,
an eval subset, an unknown model) is no paper result.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from reid.names import BRANCH_NAMES
from reid.tools.report.paper import PAPER_METRICS, PaperResult, load_paper_results
from reid.tools.report.runs import RunResult
from reid.tools.report.stats import (
    _data_rank,
    _markdown_table,
    _model_rank,
    _number,
    _setting,
    _sort_setting,
    _stats,
    data_label,
    format_beta,
    format_lambda,
)
from reid.variants import UnknownVariantError, model_variant

METRIC_LABELS = {"rank1": "R1", "rank5": "R5", "rank10": "R10", "rank20": "R20", "mAP": "mAP"}
#: Table 7's rows, in its order; "all" (global + part) is the model's own feature, the report row itself
FEATURE_ORDER = (*BRANCH_NAMES, "parts")

Network = tuple[str, tuple[tuple[str, Any], ...]]


def _override_value(text: str) -> Any:
    """An override's value as Hydra reads a plain one: booleans, numbers, else the text (quotes removed)."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text.strip("'\"")


def _network_of(model: str, changes: Iterable[tuple[str, Any]]) -> Network | None:
    """(crops, network options) of ``conf/model/<model>`` with ``changes`` (``net.<key>`` or ``regions``)."""
    try:
        variant = model_variant(model)
    except UnknownVariantError:
        return None
    regions, net = variant.regions, dict(variant.net)
    for key, value in changes:
        if key == "regions":
            regions = str(value)
        elif key.startswith("net.") and key[4:] in net:
            net[key[4:]] = value
        else:
            return None
    return regions, tuple(sorted((key, _frozen(value)) for key, value in net.items()))


def _frozen(value: Any) -> Any:
    """A network option's value as something hashable (lists as tuples), so that networks can be keys."""
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(item) for item in value)
    if isinstance(value, dict):
        return tuple(sorted((key, _frozen(item)) for key, item in value.items()))
    return value


@lru_cache(maxsize=256)
def label_network(label: str) -> Network | None:
    """The network a report row's model label stands for, None when it is no paper model.

    ``intra_inter`` is ``conf/model/intra_inter.yaml``; ``aligned[model.net.fusion=inter]`` is aligned
    with inter-attention fusion. A label with other overrides (``model.label_smoothing=...``), a
    validation subset or an unknown model gives None.
    """
    base, _, rest = label.partition("[")
    changes = []
    if rest:
        if not rest.endswith("]"):
            return None
        for item in rest[:-1].split(","):
            key, sep, value = item.lstrip("+").partition("=")
            if not sep or not key.startswith("model."):
                return None
            changes.append((key[len("model.") :], _override_value(value)))
    return _network_of(base, changes)


def result_network(result: PaperResult) -> Network | None:
    """The network of a paper row: its model with the network options it names."""
    return _network_of(result.model, ((f"net.{key}", value) for key, value in result.net.items()))


def _same_setting(paper: float | None, measured: float | None) -> bool:
    return paper is None or _setting(paper) == measured


def matching_results(
    model: str, lambda_intra: float | None, beta: float | None, data: str, results: Sequence[PaperResult]
) -> list[PaperResult]:
    """The paper's results that a report row (model label, λ, β, data set) measures again."""
    network = label_network(model)
    if network is None:
        return []
    lam, bet = _setting(lambda_intra), _setting(beta)
    return [
        result
        for result in results
        if result.data == data
        and _same_setting(result.lambda_intra, lam)
        and _same_setting(result.beta, bet)
        and result_network(result) == network
    ]


def _feature(result: PaperResult) -> str | None:
    return None if result.branch in (None, "all") else result.branch


def _feature_rank(feature: str | None) -> tuple[int, str]:
    if feature is None:
        return (-1, "")
    return (FEATURE_ORDER.index(feature) if feature in FEATURE_ORDER else len(FEATURE_ORDER), feature)


def _tables(results: Iterable[PaperResult]) -> str:
    return ", ".join(sorted({r.table for r in results}, key=lambda t: (len(t), t)))


@dataclass
class _Row:
    """A report row (model, λ, β, data set) and Table 7 feature, its runs and the paper's numbers for it."""

    key: tuple[str, float | None, float | None, str]
    feature: str | None  # None: the model's own feature
    runs: list[RunResult]
    paper: list[PaperResult]

    def measured(self, metric: str) -> tuple[float, float, int]:
        prefix = "" if self.feature is None else f"branches/{self.feature}/"
        return _stats([run.metrics.get(prefix + metric, math.nan) for run in self.runs])


def _paper_rows(runs: Sequence[RunResult], results: Sequence[PaperResult]) -> list[_Row]:
    groups: dict[tuple[str, float | None, float | None, str], list[RunResult]] = defaultdict(list)
    for run in runs:
        groups[(run.model, _setting(run.lambda_intra), _setting(run.beta), run.data)].append(run)
    rows = []
    for key in sorted(
        groups, key=lambda k: (_model_rank(k[0]), _sort_setting(k[1]), _sort_setting(k[2]), _data_rank(k[3]))
    ):
        by_feature: dict[str | None, list[PaperResult]] = defaultdict(list)
        for result in matching_results(*key, results):
            by_feature[_feature(result)].append(result)
        for feature in sorted(by_feature, key=_feature_rank):
            prefix = "" if feature is None else f"branches/{feature}/"
            # Table 7's features come from evaluate.py runs (metrics.json "branches"); a training run has none
            scored = [run for run in groups[key] if any(prefix + m in run.metrics for m in PAPER_METRICS)]
            if scored:
                rows.append(_Row(key, feature, scored, by_feature[feature]))
    return rows


def paper_table(runs: Sequence[RunResult], results: Sequence[PaperResult] | None = None) -> str:
    """The measured numbers beside the paper's, for every report row that is one of the paper's results.

    One row per (model, λ, β, data set) of the report, and per Table 7 feature when the runs scored
    each branch (evaluate.py's ``branches``): mean ± sample std over the runs (percent), the paper's
    value and Δ = measured − paper, for R1 and mAP, then each rank the paper prints for some row
    that the runs measured. The paper's tables that hold the row are named. Empty when no row is a
    paper result.

    Args:
        runs: the report's runs.
        results: the paper's numbers; None reads the packaged ones (:func:`load_paper_results`).
    """
    found = _paper_rows(runs, load_paper_results() if results is None else results)
    if not found:
        return ""
    # R1 and mAP first (Table 6's two), then the ranks some tables add; only where a row has both numbers
    order = sorted(PAPER_METRICS, key=lambda m: (m not in ("rank1", "mAP"), PAPER_METRICS.index(m)))
    metrics = [m for m in order if any(r.metric == m and row.measured(m)[2] for row in found for r in row.paper)]
    with_features = any(row.feature is not None for row in found)
    lines = []
    for row in found:
        paper: dict[str, float] = {}
        for result in row.paper:
            paper.setdefault(result.metric, result.value)  # the first table's (tables that repeat a number agree)
        cells, counts = [], []
        for metric in metrics:
            mean, std, n = row.measured(metric)
            value = paper.get(metric)
            counts.append(n)
            cells.append(_number(mean, std, n))
            cells.append("–" if value is None else f"{value:.2f}")
            cells.append("–" if value is None or n == 0 else f"{mean - value:+.2f}")
        model, lam, beta, data = row.key
        head = [model, format_lambda(lam), format_beta(beta), data_label(data)]
        head += [row.feature or "all"] if with_features else []
        lines.append(head + [str(max(counts, default=0)), _tables(row.paper)] + cells)
    header = ["model", "λ", "β", "data"] + (["feature"] if with_features else []) + ["n", "paper table"]
    for metric in metrics:
        label = METRIC_LABELS.get(metric, metric)
        header += [label, f"paper {label}", f"Δ {label}"]
    align = [":---", "---:", "---:", ":---"] + ([":---"] if with_features else []) + ["---:", ":---"]
    return _markdown_table(header, lines, align + ["---:"] * (3 * len(metrics)))
