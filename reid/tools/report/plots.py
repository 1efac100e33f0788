"""The report's pictures: a line plot per sweep, and training curves from the runs' CSV logs."""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from PIL import Image

from reid.tools.report.collect import _as_float
from reid.tools.report.runs import RunResult
from reid.tools.report.stats import _metric_values, _model_rank, _stats, data_label, format_beta, format_lambda
from reid.tools.report.sweeps import Sweep
from reid.viz.curves import line_plot_picture


def _sweep_plot(sweep: Sweep) -> Image.Image:
    lambda_sweep = sweep.parameter == "lambda_intra"
    series, errors = {}, {}
    for fixed, (xs, groups) in sweep.lines.items():
        setting = f"β={format_beta(fixed)}" if lambda_sweep else f"λ={format_lambda(fixed)}"
        for metric, key in (("R1", "rank1"), ("mAP", "mAP")):
            stats = [_stats(_metric_values(g, key)) for g in groups]
            series[f"{metric} ({setting})"] = (xs, [s[0] for s in stats])
            errors[f"{metric} ({setting})"] = [s[1] for s in stats]
    ticks = (
        None
        if lambda_sweep
        else {x: format_beta(x).split(" (")[-1].rstrip(")") for xs, _ in sweep.lines.values() for x in xs}
    )
    return line_plot_picture(
        series,
        xlabel="λ (Eq. 11)" if lambda_sweep else "β (fraction of the body height)",
        ylabel="%",
        title=f"{sweep.model} on {data_label(sweep.data)}",
        errors=errors,
        xticklabels=ticks,
        pair_colours=True,
    )


def _curve_points(run: RunResult) -> dict[str, dict[int, float]]:
    """``val/mAP`` and ``train/acc`` per epoch (1-based) from a run's CSV log, {} without one."""
    import csv

    points: dict[str, dict[int, float]] = defaultdict(dict)
    for path in sorted(run.path.glob("csv/**/metrics.csv")):
        try:
            rows = list(csv.DictReader(path.open()))
        except (OSError, csv.Error):
            continue
        for row in rows:
            epoch = _as_float(row.get("epoch"))
            for key in ("val/mAP", "train/acc"):
                value = _as_float(row.get(key))
                if epoch is not None and value is not None and math.isfinite(value):
                    points[key][int(epoch) + 1] = value
    return points


def training_curves(runs: Sequence[RunResult]) -> dict[str, Image.Image]:
    """Per data set, validation mAP and training accuracy against the epoch, one line per model
    (mean over its runs), from the runs' CSV logs (``logger=csv``); {} when no run has one."""
    by_data: dict[str, dict[str, list[dict[str, dict[int, float]]]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        points = _curve_points(run)
        if points:
            by_data[run.data][run.model].append(points)
    pictures = {}
    for data, models in by_data.items():
        series: dict[str, tuple[Sequence[float], Sequence[float]]] = {}
        for model in sorted(models, key=_model_rank):
            for key, label in (("val/mAP", "val mAP"), ("train/acc", "train acc")):
                epochs = sorted({e for points in models[model] for e in points.get(key, {})})
                if not epochs:
                    continue
                means = [
                    100 * float(np.mean([p[key][e] for p in models[model] if e in p.get(key, {})])) for e in epochs
                ]
                series[f"{model} {label}"] = (epochs, means)
        if series:
            safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", data).strip("_")
            pictures[f"curves_{safe}.png"] = line_plot_picture(
                series,
                xlabel="epoch",
                ylabel="%",
                title=f"training curves on {data_label(data)} (mean over runs)",
                pair_colours=True,
                size=(7.0, 4.5),
            )
    return pictures
