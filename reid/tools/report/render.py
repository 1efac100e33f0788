"""The report's Markdown (``report.md``) and the summary pasted into another document (``into=``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from reid.tools.report.collect import _incomplete_note
from reid.tools.report.compare import paper_table
from reid.tools.report.runs import RunResult
from reid.tools.report.stats import _markdown_table, _number, data_label, format_beta, format_lambda
from reid.tools.report.sweeps import _sweeps
from reid.tools.report.tables import ablation_table, attention_health_table, paired_table, provenance_line
from reid.variants import model_variants

#: what the paper table is, above it (report.md and the ``into=`` summary)
PAPER_NOTE = (
    "Rows that are one of the paper's results (same data set, network, λ and β; the paper's numbers are in "
    "`reid/tools/report/paper_results.yaml`): measured mean ± sample std over n runs, the paper's value, and "
    "Δ = measured − paper, in points."
)


def _runs_table(runs: Sequence[RunResult]) -> str:
    rows = []
    for run in runs:
        r1, mean_ap = run.metrics.get("rank1", math.nan), run.metrics.get("mAP", math.nan)
        rows.append(
            [
                f"`{run.path}`",
                run.model,
                run.data,
                format_lambda(run.lambda_intra),
                format_beta(run.beta),
                _number(100 * r1, math.nan, int(math.isfinite(r1))),
                _number(100 * mean_ap, math.nan, int(math.isfinite(mean_ap))),
            ]
        )
    return _markdown_table(
        ["run", "model", "data", "λ", "β", "R1", "mAP"], rows, [":---", ":---", ":---", "---:", "---:", "---:", "---:"]
    )


def _lambda_note() -> str:
    """Which models λ changes: those whose fusion trains a classifier of its own (read from the fusions)."""
    from reid.models.fusion import FUSION_REGISTRY

    trained = [v.name for v in model_variants() if FUSION_REGISTRY[str(v.net["fusion"])].has_fused_classifier]
    untouched = [v.name for v in model_variants() if v.name not in trained]
    return (
        "λ (Eq. 11) weighs the five branch losses against the fused one, so it changes only models "
        f"with a trained fusion ({', '.join(trained)}); {', '.join(untouched)} ignore it."
    )


def _paired_note(against: str | None) -> str:
    """What the paired table holds, for the line above it."""
    also = f", and every model minus {against} at any λ" if against else ""
    return (
        f"Paired by seed (a variant m[...] minus m, any other model minus the one before it{also}; same seed; "
        "mean ± std over seeds):"
    )


def render_report(
    runs: Sequence[RunResult],
    plots: dict[str, str] | None = None,
    incomplete: Sequence[Path] = (),
    against: str | None = None,
) -> str:
    """The report's Markdown; ``plots`` maps a sweep's plot name to the file to link (none: no images);
    ``incomplete``: job folders without metrics.json, named in the notes (:func:`incomplete_runs`);
    ``against``: a model every other one is also paired with (:func:`paired_table`)."""
    left_out = f" ({len(incomplete)} incomplete jobs left out: see Notes)" if incomplete else ""
    parts = [
        "# Ablation report",
        "",
        f"{len(runs)} runs{left_out}. Metrics in percent; a cell with n > 1 runs gives mean ± sample standard "
        "deviation.",
        "",
        "## Table 6: R1 / mAP per model and data set",
        "",
        ablation_table(runs),
        "",
        _lambda_note(),
        "",
    ]
    paired = paired_table(runs, against)
    if paired:
        parts += ["## Paired by seed", "", _paired_note(against), "", paired, ""]
    paper = paper_table(runs)
    if paper:
        parts += ["## Beside the paper's numbers", "", PAPER_NOTE, "", paper, ""]
    health = attention_health_table(runs)
    if health:
        parts += [
            "## Attention health of the final models",
            "",
            "On the query images: intra-attention masks outside [0.01, 0.99] (saturated), mean m(1-m) "
            "(0.25 for a sigmoid at 0.5, 0 when saturated), the masks' std over positions (0 = a "
            "per-channel constant), and inter-attention's μ (mean, and std over images).",
            "",
            health,
            "",
        ]
    parts += ["## Sweeps of λ and β (Tables 10 and 11)", ""]
    sweeps = _sweeps(runs)
    if not sweeps:
        parts += ["No sweep: no (model, data set) has two or more values of λ (or β) with the other fixed.", ""]
    for sweep in sweeps:
        if sweep.markdown:
            parts += [sweep.markdown, ""]
        if plots and sweep.plot_name in plots:
            kind = "λ" if sweep.parameter == "lambda_intra" else "β"
            parts += [f"![{sweep.model} on {data_label(sweep.data)} against {kind}]({plots[sweep.plot_name]})", ""]
    pictures = plots or {}
    curves = sorted(name for name in pictures if name.startswith("curves_"))
    if curves:
        parts += ["## Training curves", ""] + [f"![{name}]({pictures[name]})" for name in curves] + [""]
    notes = [note for run in runs for note in run.notes]
    if incomplete:
        notes.append(_incomplete_note(incomplete))
    if notes:
        parts += ["## Notes", ""] + [f"- {note}" for note in notes] + [""]
    parts += ["## Runs", "", _runs_table(runs), ""]
    return "\n".join(parts)


def summary_markdown(runs: Sequence[RunResult], command: str | None = None, against: str | None = None) -> str:
    """Table 6, the paper's numbers beside it and the attention health table, for another document (``into=``).

    ``against``: a model label that every other model is also paired with, at any λ (:func:`paired_table`).
    """
    parts = []
    if command:
        parts += [f"Produced by `{command}` from {len(runs)} runs (mean ± sample std over n runs).", ""]
    parts += [provenance_line(runs), ""]
    parts += [ablation_table(runs), ""]
    paired = paired_table(runs, against)
    if paired:
        parts += [
            _paired_note(against),
            "",
            paired,
            "",
        ]
    paper = paper_table(runs)
    if paper:
        parts += [PAPER_NOTE, "", paper, ""]
    health = attention_health_table(runs)
    if health:
        parts += ["Attention health of the final models (query images):", "", health, ""]
    return "\n".join(parts).rstrip() + "\n"
