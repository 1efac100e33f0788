"""Writing: ``report.md`` and its pictures into a folder, and a marked block of another Markdown file."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from reid.files import atomic_save_image, atomic_write_text
from reid.tools.report.plots import _sweep_plot, training_curves
from reid.tools.report.render import render_report
from reid.tools.report.runs import ReportError, RunResult
from reid.tools.report.sweeps import _sweeps


def replace_marked_block(document: str | Path, name: str, text: str) -> Path:
    """Replaces what lies between ``<!-- reid.report:NAME -->`` and ``<!-- /reid.report:NAME -->`` in ``document``.

    The file is rewritten through a temporary file and a rename, so a failure leaves it as it was.
    """
    path = Path(document)
    begin, end = f"<!-- reid.report:{name} -->", f"<!-- /reid.report:{name} -->"
    try:
        content = path.read_text()
    except OSError as err:
        raise ReportError(f"cannot read {path} ({err.strerror}): pass an existing Markdown file as into=") from None
    if content.count(begin) != 1 or content.count(end) != 1 or content.index(begin) > content.index(end):
        raise ReportError(f"{path} must hold exactly one '{begin}' ... '{end}' block for name={name}")
    head, rest = content.split(begin, 1)
    _, tail = rest.split(end, 1)
    return atomic_write_text(path, f"{head}{begin}\n{text}{end}{tail}")


def write_report(
    runs: Sequence[RunResult], out_dir: str | Path, incomplete: Sequence[Path] = (), against: str | None = None
) -> Path:
    """Writes ``report.md`` and the sweep plots (``sweep_<lambda|beta>_<model>_<data>.png``) into ``out_dir``.

    ``incomplete``: job folders without metrics.json, named in the report's notes; ``against``: a
    model every other one is also paired with in the paired table.

    Returns:
        The path of report.md.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = {}
    for sweep in _sweeps(runs):
        atomic_save_image(_sweep_plot(sweep), out_dir / sweep.plot_name)
        plots[sweep.plot_name] = sweep.plot_name
    for name, picture in training_curves(runs).items():
        atomic_save_image(picture, out_dir / name)
        plots[name] = name
    return atomic_write_text(out_dir / "report.md", render_report(runs, plots, incomplete, against))
