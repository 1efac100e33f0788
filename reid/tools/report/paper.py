"""The paper's results (Tables 3-11) as data: ``paper_results.yaml`` beside this module, read into records."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from reid.names import RANK_METRICS
from reid.tools.report.runs import DATA_ORDER, ReportError

#: the packaged file (package data: ``reid/**/*.yaml`` in pyproject.toml)
PAPER_RESULTS_FILE = Path(__file__).resolve().parent / "paper_results.yaml"
#: the metrics the paper prints, by their names in metrics.json
PAPER_METRICS = tuple(metric for metric in RANK_METRICS if metric != "mINP")
#: what a table or a row may set besides its rows and metrics
_SETTINGS = ("model", "net", "branch", "lambda_intra", "beta")
_TABLE_KEYS = {"caption", "swept", "rows", *_SETTINGS}
_ROW_KEYS = {"row", "data", *_SETTINGS, *PAPER_METRICS}


class PaperResultsError(ReportError):
    """The paper's results file is malformed (a key, data set, metric or value the loader does not know)."""


@dataclass(frozen=True)
class PaperResult:
    """One number of the paper: ``value`` (percent) of ``metric`` in row ``row`` of Table ``table`` on ``data``.

    Attributes:
        table: the table's number as the paper prints it ("6").
        data: the data config group (``market``, ``duke``, ``cuhk03_labeled``, ``cuhk03_detected``).
        row: the row: a model name (Table 6), a fusion (Table 9), a branch (Table 7), a value of λ or β
            (Tables 10, 11: "0.1", "3/48"), "ours" (Tables 3-5), "intra_inter*" (Table 6's starred row).
        metric: ``rank1``, ``rank5``, ``rank10``, ``rank20`` or ``mAP``.
        value: in percent, as printed.
        model: the ``conf/model/`` model the row is.
        net: network options that differ from that model (``model.net.<key>``), e.g. ``{"decompose": False}``.
        branch: Table 7's feature (a key of evaluate.py's ``branches``); None for the model's whole feature.
        lambda_intra: Eq. 11's λ of the run behind the number (None: not known).
        beta: Eq. 2's β as a fraction of the body height (None: not known).
    """

    table: str
    data: str
    row: str
    metric: str
    value: float
    model: str
    net: Mapping[str, Any] = field(default_factory=dict, hash=False)
    branch: str | None = None
    lambda_intra: float | None = None
    beta: float | None = None


def _fraction(value: Any, where: str) -> float | None:
    """A setting written as a number or a fraction ("3/48") as a float; None stays None."""
    if value is None:
        return None
    try:
        return float(Fraction(str(value)))
    except (ValueError, ZeroDivisionError):
        raise PaperResultsError(f"{where}: {value!r} is not a number or a fraction such as 3/48") from None


def _records(table: str, spec: Mapping[str, Any], where: str) -> list[PaperResult]:
    unknown = sorted(set(spec) - _TABLE_KEYS)
    if unknown:
        raise PaperResultsError(f"{where}: unknown keys {unknown} (known: {sorted(_TABLE_KEYS)})")
    swept = spec.get("swept")
    if swept not in (None, "lambda_intra", "beta"):
        raise PaperResultsError(f"{where}: swept must be lambda_intra or beta, got {swept!r}")
    records = []
    for index, line in enumerate(spec.get("rows") or []):
        at = f"{where}, row {index + 1}"
        unknown = sorted(set(line) - _ROW_KEYS)
        if unknown:
            raise PaperResultsError(f"{at}: unknown keys {unknown} (known: {sorted(_ROW_KEYS)})")
        if "row" not in line or "data" not in line:
            raise PaperResultsError(f"{at}: every row needs `row` and `data`")
        row, data = str(line["row"]), str(line["data"])
        if data not in DATA_ORDER:
            raise PaperResultsError(f"{at}: data {data!r} is not one of {', '.join(DATA_ORDER)}")
        settings = {key: line.get(key, spec.get(key)) for key in _SETTINGS}
        if swept:
            settings[swept] = row
        branch = settings["branch"]
        for metric in PAPER_METRICS:
            if metric not in line:
                continue
            try:
                value = float(line[metric])
            except (TypeError, ValueError):
                raise PaperResultsError(f"{at}: {metric} {line[metric]!r} is not a number") from None
            records.append(
                PaperResult(
                    table=table,
                    data=data,
                    row=row,
                    metric=metric,
                    value=value,
                    model=str(settings["model"] or row),
                    net=dict(settings["net"] or {}),
                    branch=None if branch is None else str(branch),
                    lambda_intra=_fraction(settings["lambda_intra"], at),
                    beta=_fraction(settings["beta"], at),
                )
            )
    return records


@lru_cache(maxsize=4)
def _load(path: Path) -> tuple[PaperResult, ...]:
    try:
        loaded = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except (OSError, ValueError) as err:
        raise PaperResultsError(f"cannot read the paper's results {path}: {err}") from None
    if not isinstance(loaded, dict) or not isinstance(loaded.get("tables"), dict):
        raise PaperResultsError(f"{path} must hold a mapping `tables: {{<number>: {{rows: [...]}}}}`")
    records: list[PaperResult] = []
    for table, spec in loaded["tables"].items():
        records += _records(str(table), spec or {}, f"{path.name}: table {table}")
    return tuple(records)


def load_paper_results(path: str | Path | None = None) -> list[PaperResult]:
    """The paper's results, one record per printed value, in the file's order.

    Args:
        path: a results file of the layout of ``paper_results.yaml``; None reads the packaged one
            (:data:`PAPER_RESULTS_FILE`: Tables 3-11 of the paper).

    Returns:
        One :class:`PaperResult` per (table, data set, row, metric), with the model, network options
        and λ, β of the runs the row stands for.

    Raises:
        PaperResultsError: the file cannot be read, or holds a key, data set, metric or value it should not.
    """
    return list(_load(Path(path) if path is not None else PAPER_RESULTS_FILE))
