"""Tables 10 and 11: the lambda and beta sweeps of each (model, data set), as Markdown and as plot lines."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from reid.tools.report.runs import RunResult
from reid.tools.report.stats import (
    _data_rank,
    _markdown_table,
    _metric_values,
    _model_rank,
    _number,
    _r1_map_cell,
    _setting,
    _stats,
    data_label,
    format_beta,
    format_lambda,
)


@dataclass
class Sweep:
    """The sweep of one parameter for one (model, data set): a Markdown table and the plot's lines."""

    model: str
    data: str
    parameter: str  # "lambda_intra" or "beta"
    markdown: str
    # fixed value of the other parameter -> (swept values, runs per value)
    lines: dict[float | None, tuple[list[float], list[list[RunResult]]]]

    @property
    def plot_name(self) -> str:
        """File name of the sweep's line plot."""
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{self.model}_{self.data}").strip("_")
        return f"sweep_{'lambda' if self.parameter == 'lambda_intra' else 'beta'}_{safe}.png"


def _grouped(runs: Sequence[RunResult], swept: str, fixed: str) -> dict[float, dict[float, list[RunResult]]]:
    """fixed value -> swept value -> runs, for runs where both are known."""
    groups: dict[float, dict[float, list[RunResult]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        x, f = _setting(getattr(run, swept)), _setting(getattr(run, fixed))
        if x is not None and f is not None:
            groups[f][x].append(run)
    return {f: dict(sorted(by_x.items())) for f, by_x in sorted(groups.items()) if len(by_x) > 1}


def _one_sweep_table(title: str, label: str, by_x: dict[float, list[RunResult]], show: Callable[[float], str]) -> str:
    rows = []
    for x, group in by_x.items():
        r1, mean_ap = _stats(_metric_values(group, "rank1")), _stats(_metric_values(group, "mAP"))
        rows.append([show(x), _number(*r1), _number(*mean_ap), str(len(group))])
    return f"**{title}**\n\n" + _markdown_table([label, "R1", "mAP", "n"], rows, ["---:", "---:", "---:", "---:"])


def _grid_table(title: str, runs: Sequence[RunResult]) -> str:
    grid: dict[tuple[float, float], list[RunResult]] = defaultdict(list)
    for run in runs:
        lam, beta = _setting(run.lambda_intra), _setting(run.beta)
        if lam is not None and beta is not None:
            grid[(lam, beta)].append(run)
    lambdas = sorted({k[0] for k in grid})
    betas = sorted({k[1] for k in grid})
    rows = [
        [format_lambda(lam)] + [_r1_map_cell(grid.get((lam, beta), []), spread=False) or "–" for beta in betas]
        for lam in lambdas
    ]
    header = ["λ \\ β"] + [format_beta(b) for b in betas]
    return f"**{title}**\n\n" + _markdown_table(header, rows, ["---:"] * len(header))


def _sweeps(runs: Sequence[RunResult]) -> list[Sweep]:
    by_group: dict[tuple[str, str], list[RunResult]] = defaultdict(list)
    for run in runs:
        by_group[(run.model, run.data)].append(run)
    sweeps: list[Sweep] = []
    for model, data in sorted(by_group, key=lambda k: (_model_rank(k[0]), _data_rank(k[1]))):
        group = by_group[(model, data)]
        where = f"{model} on {data_label(data)}"
        lambda_lines = _grouped(group, "lambda_intra", "beta")
        beta_lines = _grouped(group, "beta", "lambda_intra")
        if len(lambda_lines) > 1:
            # lambda swept at two or more betas: a 2-D design, one grid holds every number
            grid = _grid_table(f"{where}: R1 / mAP (%) over λ × β (mean per cell)", group)
            sweeps.append(Sweep(model, data, "lambda_intra", grid, _plot_lines(lambda_lines)))
            sweeps.append(Sweep(model, data, "beta", "", _plot_lines(beta_lines)))
            continue
        if lambda_lines:
            tables = [
                _one_sweep_table(
                    f"{where}: R1 / mAP (%) against λ (Table 10), β = {format_beta(fixed)}", "λ", by_x, format_lambda
                )
                for fixed, by_x in lambda_lines.items()
            ]
            sweeps.append(Sweep(model, data, "lambda_intra", "\n\n".join(tables), _plot_lines(lambda_lines)))
        if beta_lines:
            tables = [
                _one_sweep_table(
                    f"{where}: R1 / mAP (%) against β (Table 11), λ = {format_lambda(fixed)}", "β", by_x, format_beta
                )
                for fixed, by_x in beta_lines.items()
            ]
            sweeps.append(Sweep(model, data, "beta", "\n\n".join(tables), _plot_lines(beta_lines)))
    return sweeps


def _plot_lines(
    lines: dict[float, dict[float, list[RunResult]]],
) -> dict[float | None, tuple[list[float], list[list[RunResult]]]]:
    return {fixed: (list(by_x), list(by_x.values())) for fixed, by_x in lines.items()}


def sweep_tables(runs: Sequence[RunResult]) -> list[str]:
    """Tables 10 and 11 as Markdown, one string per swept (model, data set, parameter).

    A parameter is swept in a (model, data set) when at least two of its values were run with the
    other parameter fixed; there is one table per fixed value. When lambda is swept at two or more
    betas, the (model, data set) gets a single lambda x beta grid instead.
    """
    return [sweep.markdown for sweep in _sweeps(runs) if sweep.markdown]
