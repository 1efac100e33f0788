"""What the report is about: one finished run (:class:`RunResult`), its error type, and the names of data sets."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reid.errors import ReidError
from reid.variants import model_names

#: Table 6's column order (data config groups); other data sets follow, sorted by name.
DATA_ORDER = ("market", "duke", "cuhk03_labeled", "cuhk03_detected")
DATA_LABELS = {
    "market": "Market-1501",
    "duke": "DukeMTMC-reID",
    "cuhk03_labeled": "CUHK03-L",
    "cuhk03_detected": "CUHK03-D",
}
#: data.name values -> data config group, for runs without hydra.yaml
DATASET_GROUPS = {"market1501": "market", "dukemtmcreid": "duke"}
UNKNOWN = "?"
LAMBDA_KEY = "model.lambda_intra"
BETA_KEY = "data.beta"


def sweep_command() -> str:
    """The command that trains every model (for the message of a report without runs)."""
    return (
        f"python train.py -m model={','.join(model_names())} "
        "(or model.lambda_intra=0,0.1,0.5 / data.beta=0,0.0625,0.125)"
    )


class ReportError(ReidError):
    """A problem with the folders given to the report (missing, no runs, unreadable metrics)."""


@dataclass
class RunResult:
    """One finished run: where it is, what it trained, and its final metrics (fractions)."""

    path: Path
    model: str
    data: str
    lambda_intra: float | None
    beta: float | None
    metrics: dict[str, float]
    overrides: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    attention: dict[str, Any] = field(default_factory=dict)
    #: the run's ``provenance.json``: the commit and thread count that produced it ({} for older runs)
    provenance: dict[str, Any] = field(default_factory=dict)
