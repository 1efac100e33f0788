"""Ablation report: `reid-report <multirun dir | run dirs...> [out=DIR]` -> Table 6 and the lambda/beta sweeps.

Every ``metrics.json`` below the given folders is one run. Its model variant, data set, lambda
(``model.lambda_intra``, Eq. 11) and beta (``data.beta``, Eq. 2) come from the run's ``.hydra/``
folder: the chosen config groups (``hydra.yaml``: ``hydra.runtime.choices``), the composed config
(``config.yaml``) and the command-line overrides (``overrides.yaml``). The report has

- Table 6: one row per model variant and (lambda, beta) setting, one column per data set, cells
  "R1 / mAP" in percent; runs that share a cell (e.g. several seeds) are averaged, with the
  sample standard deviation and their number;
- the paper's numbers beside the measured ones, for every row whose data set, model, lambda and
  beta match one of the paper's results (``paper_results.yaml``: Tables 3-11), with the difference;
- Tables 10 and 11: for each (model, data set) whose runs vary lambda at a fixed beta (or beta at
  a fixed lambda), R1 and mAP against the swept value, with a line plot (PNG); a lambda x beta
  grid when both vary.

It is written to ``<out>/report.md`` (with the PNGs) and printed.

The package, one concern a module: :mod:`~reid.tools.report.runs` (what a run is),
:mod:`~reid.tools.report.collect` (finding and reading run folders), :mod:`~reid.tools.report.stats`
(aggregation and formatting), :mod:`~reid.tools.report.tables` (Table 6, paired differences,
attention health), :mod:`~reid.tools.report.sweeps` (Tables 10 and 11), :mod:`~reid.tools.report.plots`,
:mod:`~reid.tools.report.paper` (the paper's numbers) and :mod:`~reid.tools.report.compare` (them beside
the runs), :mod:`~reid.tools.report.render` (the Markdown), :mod:`~reid.tools.report.write` (files and
marked blocks) and :mod:`~reid.tools.report.cli` (``reid-report``).
"""

from reid.tools.report.cli import ReportOptions, main, report
from reid.tools.report.collect import SUBSET_MARK, collect_runs, incomplete_runs
from reid.tools.report.compare import label_network, matching_results, paper_table
from reid.tools.report.paper import PAPER_RESULTS_FILE, PaperResult, PaperResultsError, load_paper_results
from reid.tools.report.plots import _curve_points as _curve_points
from reid.tools.report.plots import training_curves
from reid.tools.report.render import render_report, summary_markdown
from reid.tools.report.runs import (
    BETA_KEY,
    DATA_LABELS,
    DATA_ORDER,
    DATASET_GROUPS,
    LAMBDA_KEY,
    UNKNOWN,
    ReportError,
    RunResult,
    sweep_command,
)
from reid.tools.report.stats import data_label, format_beta, format_lambda
from reid.tools.report.sweeps import Sweep, sweep_tables
from reid.tools.report.tables import ablation_table, attention_health_table, paired_table, provenance_line
from reid.tools.report.write import replace_marked_block, write_report

__all__ = [
    "BETA_KEY",
    "DATASET_GROUPS",
    "DATA_LABELS",
    "DATA_ORDER",
    "LAMBDA_KEY",
    "PAPER_RESULTS_FILE",
    "PaperResult",
    "PaperResultsError",
    "SUBSET_MARK",
    "UNKNOWN",
    "ReportError",
    "ReportOptions",
    "RunResult",
    "Sweep",
    "ablation_table",
    "attention_health_table",
    "collect_runs",
    "data_label",
    "format_beta",
    "format_lambda",
    "incomplete_runs",
    "label_network",
    "load_paper_results",
    "main",
    "matching_results",
    "paired_table",
    "paper_table",
    "provenance_line",
    "render_report",
    "replace_marked_block",
    "report",
    "summary_markdown",
    "sweep_command",
    "sweep_tables",
    "training_curves",
    "write_report",
]
