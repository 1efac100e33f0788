"""Aggregation and formatting: settings as keys, mean ± sample std in percent, row orders, Markdown tables."""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

import numpy as np

from reid.tools.report.runs import DATA_LABELS, DATA_ORDER, UNKNOWN, RunResult
from reid.variants import model_names


def _setting(value: float | None) -> float | None:
    """A hashable key for a float setting that ignores float noise (0.1 vs 0.1000000001)."""
    return None if value is None else round(float(value), 9)


def format_beta(beta: float | None) -> str:
    """beta as a number with its fraction of the body height, e.g. ``0.0625 (3/48)``, ``0.1 (1/10)``."""
    if beta is None:
        return UNKNOWN
    if beta == 0:
        return "0"
    forty_eighths = beta * 48
    if math.isclose(forty_eighths, round(forty_eighths), abs_tol=1e-6):
        return f"{beta:.4g} ({round(forty_eighths)}/48)"  # Table 11's steps of H/48
    fraction = Fraction(beta).limit_denominator(100)
    if math.isclose(float(fraction), beta, abs_tol=1e-9):
        return f"{beta:.4g} ({fraction.numerator}/{fraction.denominator})"
    return f"{beta:g}"


def format_lambda(value: float | None) -> str:
    """lambda as a short number, or ``?`` when unknown."""
    return UNKNOWN if value is None else f"{value:g}"


def _stats(values: Sequence[float]) -> tuple[float, float, int]:
    """(mean, sample std, n) of the finite values, in percent; NaN mean when there are none."""
    finite = [100.0 * v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return math.nan, math.nan, 0
    std = float(np.std(finite, ddof=1)) if len(finite) > 1 else math.nan
    return float(np.mean(finite)), std, len(finite)


def _number(mean: float, std: float, n: int) -> str:
    if n == 0:
        return "–"
    return f"{mean:.2f}" if n == 1 else f"{mean:.2f} ± {std:.2f}"


def _metric_values(runs: Sequence[RunResult], key: str) -> list[float]:
    return [run.metrics.get(key, math.nan) for run in runs]


def _r1_map_cell(runs: Sequence[RunResult], spread: bool = True) -> str:
    """ "R1 / mAP" in percent, averaged over ``runs``; with ``spread``, ``± std`` when several;
    ``(n=...)`` when several."""
    if not runs:
        return ""
    numbers = []
    for key in ("rank1", "mAP"):
        mean, std, n = _stats(_metric_values(runs, key))
        numbers.append(_number(mean, std, n) if spread else _number(mean, math.nan, min(n, 1)))
    return " / ".join(numbers) + (f" (n={len(runs)})" if len(runs) > 1 else "")


def _model_rank(model: str) -> tuple[int, str]:
    """Table 6's order (that of :func:`reid.variants.model_names`); other models follow, by name."""
    order = model_names()
    base = model.split("[", 1)[0]  # "intra_inter[model.net.fusion=fc]" sorts with intra_inter
    return (order.index(base) if base in order else len(order), model)


def _data_rank(data: str) -> tuple[int, str]:
    return (DATA_ORDER.index(data) if data in DATA_ORDER else len(DATA_ORDER), data)


def _sort_setting(value: float | None) -> tuple[int, float]:
    return (1, 0.0) if value is None else (0, value)


def data_label(data: str) -> str:
    """A data set's column title, e.g. ``Market-1501`` for the ``market`` config group."""
    return DATA_LABELS.get(data, data)


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], align: Sequence[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
