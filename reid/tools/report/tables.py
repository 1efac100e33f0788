"""Table 6 (model x data set), the seed-paired differences, attention health, and the provenance line."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from reid.tools.report.runs import RunResult
from reid.tools.report.stats import (
    _data_rank,
    _markdown_table,
    _model_rank,
    _r1_map_cell,
    _setting,
    _sort_setting,
    _stats,
    data_label,
    format_beta,
    format_lambda,
)


def provenance_line(runs: Sequence[RunResult]) -> str:
    """Which code produced ``runs``: "Code: commit abc1234, 1 thread." with a warning when they differ."""
    commits = sorted(
        {
            str(r.provenance.get("commit"))[:7] + ("+changes" if r.provenance.get("dirty") else "")
            for r in runs
            if r.provenance.get("commit")
        }
    )
    threads = sorted({int(r.provenance["threads"]) for r in runs if r.provenance.get("threads")})
    unknown = sum(1 for r in runs if not r.provenance.get("commit"))
    if not commits and not threads:
        return "Code: not recorded (runs from before provenance.json was written)."
    pieces = []
    if commits:
        pieces.append(("commit " if len(commits) == 1 else "commits ") + ", ".join(commits))
    if unknown:
        pieces.append(f"{unknown} runs without a recorded commit")
    if threads:
        pieces.append(", ".join(str(t) for t in threads) + (" thread" if threads == [1] else " threads"))
    line = "Code: " + "; ".join(pieces) + "."
    if len(commits) > 1 or (commits and unknown) or len(threads) > 1:
        line += " **Mixed: these runs come from different code or thread counts, which change trajectories.**"
    return line


# ---------------------------------------------------------------------------------------------
# Table 6


def ablation_table(runs: Sequence[RunResult]) -> str:
    """Table 6 as Markdown: rows = model variant and (lambda, beta), columns = data sets.

    Rows follow baseline, aligned, intra, inter, intra_inter, then other variants by name; each
    variant's settings by lambda then beta. Cells are "R1 / mAP" in percent; runs sharing a cell
    are averaged, shown with ± the sample standard deviation and their number n.
    """
    cells: dict[tuple[str, float | None, float | None], dict[str, list[RunResult]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for run in runs:
        cells[(run.model, _setting(run.lambda_intra), _setting(run.beta))][run.data].append(run)
    columns = sorted({run.data for run in runs}, key=_data_rank)
    keys = sorted(cells, key=lambda k: (_model_rank(k[0]), _sort_setting(k[1]), _sort_setting(k[2])))
    rows = [
        [model, format_lambda(lam), format_beta(beta)]
        + [_r1_map_cell(cells[(model, lam, beta)].get(d, [])) for d in columns]
        for model, lam, beta in keys
    ]
    return _markdown_table(
        ["model", "λ", "β"] + [data_label(d) for d in columns], rows, [":---", "---:", "---:"] + ["---:"] * len(columns)
    )


def _seed(run: RunResult) -> str | None:
    """The run's ``seed=`` override (multirun jobs), None when it was not given."""
    given = [o.split("=", 1)[1] for o in run.overrides if o.split("=", 1)[0].lstrip("+") == "seed"]
    return given[-1] if given else None


def _parent(label: str) -> str:
    """The label with the last option of its ``[...]`` removed: ``m[a=1,b=2]`` -> ``m[a=1]`` -> ``m``."""
    if not label.endswith("]") or "[" not in label:
        return label
    name, options = label[:-1].split("[", 1)
    kept = options.rsplit(",", 1)[0] if "," in options else ""
    return f"{name}[{kept}]" if kept else name


def _comparisons(ordered: Sequence[str]) -> list[tuple[str, str]]:
    """(before, after) label pairs: a variant ``m[...,x]`` against ``m[...]`` when that was run,
    every other model against the plain model before it in Table 6's order."""
    pairs = []
    for index, after in enumerate(ordered):
        base = _parent(after)
        if base != after and base in ordered:  # wherever the sort put it ("m[a,x]" sorts before "m[a]")
            pairs.append((base, after))
            continue
        # never against a variant of itself: that pair is taken the other way round above
        earlier = [m for m in ordered[:index] if "[" not in m] or [m for m in ordered[:index] if _parent(m) != after]
        if earlier:
            pairs.append((earlier[-1], after))
    return pairs


def _difference_rows(
    before: str,
    after: str,
    pairs: Sequence[tuple[RunResult, RunResult]],
    data: str,
    lam: float | None,
    beta: float | None,
) -> list[list[str]]:
    """One row per place the pairs were scored (the data set, then each of its test sets): Δ R1 and Δ mAP."""
    rows = []
    sets = sorted({k.split("/")[1] for _, run in pairs for k in run.metrics if k.startswith("test_sets/")})
    for where, prefix in [(data_label(data), "")] + [(f"{data_label(data)} → {t}", f"test_sets/{t}/") for t in sets]:
        cells = []
        for key in ("rank1", "mAP"):
            diffs = [b.metrics.get(prefix + key, math.nan) - a.metrics.get(prefix + key, math.nan) for a, b in pairs]
            mean, std, n = _stats(diffs)
            cells.append("–" if n == 0 else f"{mean:+.2f}" + (f" ± {std:.2f}" if n > 1 else ""))
        rows.append([f"{after} − {before}", format_lambda(lam), format_beta(beta), where, str(len(pairs))] + cells)
    return rows


def paired_table(runs: Sequence[RunResult], against: str | None = None) -> str:
    """Paired differences, seed by seed: a variant ``m[...]`` against ``m``, each other model against the one before it.

    Runs pair when they share the data set, λ, β and ``seed=``; a difference is taken per seed
    and then averaged (mean ± sample std over the seeds), for R1 and mAP on the data set itself
    and on each of its ``data.test_sets``. With ``against`` (a model label), every other model
    is also paired with that one at any λ (the λ column is the other model's), where a
    reference run at the same λ is taken first. Empty when no two models share a seed.
    """
    by_key: dict[tuple[str, float | None, float | None], dict[str, dict[str, RunResult]]] = defaultdict(
        lambda: defaultdict(dict)
    )
    for run in runs:
        seed = _seed(run)
        if seed is not None:
            by_key[(run.data, _setting(run.lambda_intra), _setting(run.beta))][run.model][seed] = run
    rows = []
    done: set[tuple[str, str, str, float | None, float | None]] = set()
    for (data, lam, beta), models in sorted(by_key.items(), key=lambda item: _data_rank(item[0][0])):
        ordered = sorted(models, key=_model_rank)
        for before, after in _comparisons(ordered):
            seeds = sorted(set(models[before]) & set(models[after]), key=lambda s: (len(s), s))
            if seeds:
                done.add((before, after, data, lam, beta))
                rows += _difference_rows(
                    before, after, [(models[before][s], models[after][s]) for s in seeds], data, lam, beta
                )
    if against is not None:
        for (data, lam, beta), models in sorted(
            by_key.items(), key=lambda item: (_data_rank(item[0][0]), _sort_setting(item[0][1]))
        ):
            # the reference at the same λ, else at the one λ it was run at (a model that ignores λ)
            references = models.get(against) or next(
                (m[against] for (d, _, b), m in by_key.items() if (d, b) == (data, beta) and against in m), {}
            )
            for after in sorted(models, key=_model_rank):
                seeds = sorted(set(references) & set(models[after]), key=lambda s: (len(s), s))
                if after == against or not seeds or (against, after, data, lam, beta) in done:
                    continue
                rows += _difference_rows(
                    against, after, [(references[s], models[after][s]) for s in seeds], data, lam, beta
                )
    if not rows:
        return ""
    return _markdown_table(
        ["pair", "λ", "β", "scored on", "seeds", "Δ R1", "Δ mAP"],
        rows,
        [":---", "---:", "---:", ":---", "---:", "---:", "---:"],
    )


def _health_values(runs: Sequence[RunResult]) -> dict[str, list[float]]:
    """Per run: mask saturation, mean m(1-m), spatial std (all branches and blocks), and mu's mean and
    std over images (averaged over the four parts)."""
    values: dict[str, list[float]] = defaultdict(list)
    for run in runs:
        mean = run.attention.get("intra_mean")
        if mean:
            for key in ("saturated", "working", "spatial_std", "auroc"):
                if key in mean:
                    values[key].append(float(mean[key]))
        if "complementarity_mean" in run.attention:
            values["complementarity"].append(float(run.attention["complementarity_mean"]))
        for figure, value in (run.attention.get("inter_mean") or {}).items():
            if value is not None and math.isfinite(float(value)):
                values[figure].append(float(value))
        inter = run.attention.get("inter")
        if inter:
            values["mu"].append(float(np.mean([f["mean"] for f in inter.values()])))
            values["mu_std"].append(float(np.mean([f["std"] for f in inter.values()])))
        for mode, figures in (run.attention.get("knockout") or {}).items():
            # the drop in mAP when the masks lose their variation over positions / channels
            if "mAP" in figures and "mAP" in run.metrics:
                values[f"knockout_{mode}"].append(float(run.metrics["mAP"]) - float(figures["mAP"]))
    return values


def attention_health_table(runs: Sequence[RunResult]) -> str:
    """Attention health of the final models (mean ± std over runs), one row per model, setting and data set.

    Columns: % of mask entries outside [0.01, 0.99], mean m(1 - m) (0.25 = sigmoid at 0.5),
    spatial std of the masks, mu averaged over parts and over images, and mu's std over images;
    "–" where the model has no such attention. Evaluation runs with ``eval.attention_knockout``
    add the mAP lost (points) when the masks are flattened over positions and over channels.
    Empty when no run recorded attention figures.
    """
    cells: dict[tuple[str, float | None, float | None, str], list[RunResult]] = defaultdict(list)
    for run in runs:
        if run.attention:
            cells[(run.model, _setting(run.lambda_intra), _setting(run.beta), run.data)].append(run)
    if not cells:
        return ""

    def show(values: list[float], scale: float = 1.0, digits: int = 3) -> str:
        if not values:
            return "–"
        scaled = [scale * v for v in values]
        mean = float(np.mean(scaled))
        if len(scaled) == 1:
            return f"{mean:.{digits}f}"
        return f"{mean:.{digits}f} ± {float(np.std(scaled, ddof=1)):.{digits}f}"

    # the figures against the truth (reid.metrics.attention_health): columns only when some run has them
    truths = [
        (key, title)
        for key, title in (
            ("auroc", "mask AUROC"),
            ("complementarity", "global–part mask corr."),
            ("rho_visible", "ρ(μ, visible share)"),
            ("concordance_visible", "C(μ, visible share)"),
            ("rho_confidence", "ρ(μ, keypoint conf.)"),
        )
        if any(_health_values(group)[key] for group in cells.values())
    ]
    knockouts = sorted(
        {mode for group in cells.values() for run in group for mode in run.attention.get("knockout") or {}},
        key=lambda mode: (mode != "spatial", mode),
    )
    rows = []
    for key in sorted(
        cells, key=lambda k: (_model_rank(k[0]), _sort_setting(k[1]), _sort_setting(k[2]), _data_rank(k[3]))
    ):
        model, lam, beta, data = key
        values = _health_values(cells[key])
        rows.append(
            [
                model,
                format_lambda(lam),
                format_beta(beta),
                data_label(data),
                str(len(cells[key])),
                show(values["saturated"], 100.0, 1),
                show(values["working"]),
                show(values["spatial_std"]),
                show(values["mu"]),
                show(values["mu_std"]),
            ]
            + [show(values[key]) for key, _ in truths]
            + [show(values[f"knockout_{mode}"], 100.0, 1) for mode in knockouts]
        )
    header = ["model", "λ", "β", "data", "n", "saturated %", "mean m(1-m)", "spatial std", "μ", "μ std over images"]
    header += [title for _, title in truths]
    header += [f"mAP lost, masks flat over {'positions' if mode == 'spatial' else 'channels'}" for mode in knockouts]
    return _markdown_table(header, rows, [":---", "---:", "---:", ":---"] + ["---:"] * (len(header) - 4))
