"""``reid-report``: its options and what it does with them."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from reid.conf.tool import option, run_tool
from reid.tools.report.collect import _incomplete_note, collect_runs, incomplete_runs
from reid.tools.report.render import summary_markdown
from reid.tools.report.runs import ReportError
from reid.tools.report.write import replace_marked_block, write_report


@dataclass
class ReportOptions:
    """The options of ``reid-report`` (``key=value``; bare arguments are ``paths``)."""

    paths: list[str] = option([], "multirun folders, run folders, or folders above them", positional=True)
    out: str | None = option(None, "where report.md and the plots go (default: the first folder)")
    into: str | None = option(
        None,
        "also write Table 6, the paper's numbers beside it and the attention health table into this Markdown file "
        "(e.g. README.md), between <!-- reid.report:NAME --> and <!-- /reid.report:NAME -->",
    )
    name: str = option("ablation", "the marked block of `into` to replace")
    command: str | None = option(None, "the command that produced the runs, quoted in the `into` block")
    against: str | None = option(
        None, "a model label (as the tables print it) that the paired tables also pair every other model with, at any λ"
    )


def report(options: ReportOptions) -> int:
    """Tabulates finished runs: writes report.md (+ PNGs) and prints its Markdown."""
    if not options.paths:
        raise ReportError("no run folders given (fix: reid-report outputs/train/multiruns/<date_time> [more folders])")
    paths = [Path(path) for path in options.paths]
    runs = collect_runs(paths)
    incomplete = incomplete_runs(paths)
    if options.against is not None and options.against not in {run.model for run in runs}:
        models = ", ".join(sorted({run.model for run in runs}))
        raise ReportError(f"against={options.against}: no such model among the runs (fix: one of {models})")
    written = write_report(runs, Path(options.out) if options.out else paths[0], incomplete, options.against)
    if options.into:
        replace_marked_block(Path(options.into), options.name, summary_markdown(runs, options.command, options.against))
    print(written.read_text())
    for note in (note for run in runs for note in run.notes):
        print(f"note: {note}", file=sys.stderr)
    if incomplete:
        print(f"note: {_incomplete_note(incomplete)}", file=sys.stderr)
    print(f"wrote {written}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``reid-report`` / ``python -m reid.tools.report``: 0 on success, 2 on a user error (one ``error:`` line)."""
    return run_tool(report, ReportOptions, "report", argv)
