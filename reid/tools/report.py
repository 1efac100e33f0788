"""Ablation report: `reid-report <multirun dir | run dirs...> [out=DIR]` -> Table 6 and the lambda/beta sweeps.

Every ``metrics.json`` below the given folders is one run. Its model variant, data set, lambda
(``model.lambda_intra``, Eq. 11) and beta (``data.beta``, Eq. 2) come from the run's ``.hydra/``
folder: the chosen config groups (``hydra.yaml``: ``hydra.runtime.choices``), the composed config
(``config.yaml``) and the command-line overrides (``overrides.yaml``). The report has

- Table 6: one row per model variant and (lambda, beta) setting, one column per data set, cells
  "R1 / mAP" in percent; runs that share a cell (e.g. several seeds) are averaged, with the
  sample standard deviation and their number;
- Tables 10 and 11: for each (model, data set) whose runs vary lambda at a fixed beta (or beta at
  a fixed lambda), R1 and mAP against the swept value, with a line plot (PNG); a lambda x beta
  grid when both vary.

It is written to ``<out>/report.md`` (with the PNGs) and printed.
"""

from __future__ import annotations

import json
import logging
import math
import re
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterable, List, Optional, Sequence

import numpy as np
from omegaconf import DictConfig, ListConfig, OmegaConf
from PIL import Image

from reid.errors import ReidError
from reid.names import PROVENANCE_FILE
from reid.files import atomic_save_image, atomic_write_text
from reid.conf.tool import option, run_tool
from reid.variants import model_names, model_variants
from reid.viz.curves import line_plot_picture

log = logging.getLogger(__name__)

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


# ---------------------------------------------------------------------------------------------
# collecting runs


# a resolver call in a stored config (``${oc.env:AWS_SECRET}``): read as text, never run. Hydra's own
# (``${hydra:...}``) cannot resolve outside a Hydra run anyway and reads as absent
_RESOLVER_CALL = re.compile(r"\$\{\s*(?!hydra:)[\w.]+:")


def _inert(node: Any) -> Any:
    """``node`` (plain containers) with every resolver call escaped into literal text."""
    if isinstance(node, dict):
        return {key: _inert(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_inert(value) for value in node]
    if isinstance(node, str) and _RESOLVER_CALL.search(node):
        return node.replace("${", "\\${")
    return node


def _load_yaml(path: Path) -> DictConfig | ListConfig | None:
    """A run folder's YAML as data: a resolver it names (``oc.env``...) is never called, so a shared
    run folder cannot make the report print this machine's environment."""
    if not path.is_file():
        return None
    try:
        loaded = OmegaConf.load(path)
        return OmegaConf.create(_inert(OmegaConf.to_container(loaded, resolve=False)))
    except Exception as err:  # a broken YAML file should not stop the whole report
        log.warning("cannot read %s: %s", path, err)
        return None


def _select(cfg: DictConfig | ListConfig | None, key: str) -> Any:
    """``cfg[key]`` resolved where possible; None when absent or when its interpolation needs
    Hydra's runtime (e.g. ``${hydra:...}``)."""
    if cfg is None:
        return None
    try:
        value = OmegaConf.select(cfg, key, default=None)
    except Exception:
        value = OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=False)
    return value


def _as_float(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def _data_group(config: DictConfig | None) -> str:
    """The data config group, guessed from the composed config (for runs without hydra.yaml)."""
    name = _select(config, "data.name")
    if name is None:
        return UNKNOWN
    if name == "cuhk03":
        return "cuhk03_labeled" if _select(config, "data.options.labeled") else "cuhk03_detected"
    return DATASET_GROUPS.get(str(name), str(name))


def _model_variant(config: DictConfig | None) -> str:
    """The model of ``conf/model/`` that the composed config is, for runs without hydra.yaml.

    A run is a model when it has that model's crops and the same values for every network
    option in which the models differ; otherwise it is named by its fusion.
    """
    if config is None or _select(config, "model") is None:
        return UNKNOWN
    variants = model_variants()
    distinguishing = sorted(
        {key for variant in variants for key in variant.net if len({repr(v.net.get(key)) for v in variants}) > 1}
    )
    regions = _select(config, "model.regions")
    for variant in variants:
        if regions == variant.regions and all(
            _select(config, f"model.net.{key}") == variant.net.get(key) for key in distinguishing
        ):
            return variant.name
    intra = "intra_" if _select(config, "model.net.intra_attention") else ""
    return f"{intra}{_select(config, 'model.net.fusion')}"


def _model_overrides(overrides: Sequence[str]) -> list[str]:
    """Command-line changes to the model other than lambda: they make a different variant."""
    return sorted(
        o for o in overrides if o.lstrip("+~").startswith("model.") and not o.lstrip("+~").startswith(LAMBDA_KEY)
    )


def _describe_run(run_dir: Path) -> tuple[str, str, float | None, float | None, list[str], list[str]]:
    """(model, data, lambda, beta, overrides, notes) of one run folder."""
    hydra_dir = run_dir / ".hydra"
    notes: list[str] = []
    config = _load_yaml(hydra_dir / "config.yaml")
    hydra = _load_yaml(hydra_dir / "hydra.yaml")
    overrides_cfg = _load_yaml(hydra_dir / "overrides.yaml")
    overrides = [str(o) for o in overrides_cfg] if isinstance(overrides_cfg, ListConfig) else []
    if config is None:
        notes.append(
            f"{run_dir}: no readable .hydra/config.yaml, so model, data set, lambda and beta are unknown ({UNKNOWN})"
        )
        return UNKNOWN, UNKNOWN, None, None, overrides, notes

    model_choice = _select(hydra, "hydra.runtime.choices.model")
    data_choice = _select(hydra, "hydra.runtime.choices.data")
    if hydra is None:
        notes.append(f"{run_dir}: no readable .hydra/hydra.yaml, model variant and data set guessed from config.yaml")
    model = str(model_choice) if model_choice else _model_variant(config)
    data = str(data_choice) if data_choice else _data_group(config)
    preset = _select(config, "data.options.preset")
    if preset and preset != "default":
        data = f"{data}[{preset}]"  # a synthetic difficulty preset is a data set of its own
    lambda_intra = _as_float(_select(config, LAMBDA_KEY))
    # what the run recorded as used wins over its config (evaluate.py takes β from the checkpoint)
    recorded_beta = _as_float(_recorded_input(run_dir).get("beta"))
    beta = recorded_beta if recorded_beta is not None else _as_float(_select(config, BETA_KEY))
    model_overrides = _model_overrides(overrides)

    if _select(config, "task_name") == "evaluate":
        # evaluate.py scores the checkpoint with the model config stored in it: the run's own model
        # group is only a default, so take the variant from the training run that made the checkpoint
        trained = _training_run_of(config, hydra)
        if trained is None:
            notes.append(
                f"{run_dir}: evaluation run whose checkpoint's training run was not found "
                f"(ckpt_path={_select(config, 'ckpt_path')}): model and lambda unknown ({UNKNOWN})"
            )
            model, lambda_intra, model_overrides = UNKNOWN, None, []
        else:
            model, _, lambda_intra, train_beta, _, _ = _describe_run(trained)  # model names its overrides
            model_overrides = []
            if recorded_beta is None and train_beta is not None and not _given(overrides, BETA_KEY):
                # an evaluation that did not record its input settings took β from the checkpoint
                # unless it was given on the command line (reid.tasks.evaluate.use_stored_input_config)
                beta = train_beta
            if train_beta is not None and beta is not None and not math.isclose(train_beta, beta):
                notes.append(f"{run_dir}: scored with beta={beta:g} a model trained with beta={train_beta:g}")
    if model_overrides and model != UNKNOWN:
        model = f"{model}[{','.join(model_overrides)}]"
    return model, data, lambda_intra, beta, overrides, notes


def _recorded_input(run_dir: Path) -> dict[str, Any]:
    """The input settings a run recorded as used (metrics.json ``input_settings``, evaluate.py); {} without."""
    try:
        recorded = json.loads((run_dir / "metrics.json").read_text()).get("input_settings")
    except (OSError, ValueError, AttributeError):
        return {}  # an unreadable metrics.json is reported by _read_metrics
    return recorded if isinstance(recorded, dict) else {}


def _given(overrides: Sequence[str], key: str) -> bool:
    """Whether the command line set ``key`` (``key=...``, ``+key=...``, ``++key=...``)."""
    return any(o.lstrip("+~").split("=", 1)[0] == key for o in overrides)


def _training_run_of(config: DictConfig, hydra: DictConfig | None) -> Path | None:
    """The run folder of an evaluation run's checkpoint (``<run>/checkpoints/<name>.ckpt``), if it has .hydra."""
    ckpt = _select(config, "ckpt_path")
    if not ckpt:
        return None
    path = Path(str(ckpt))
    if not path.is_absolute():
        cwd = _select(hydra, "hydra.runtime.cwd")
        path = Path(str(cwd)) / path if cwd else path
    run_dir = path.parent.parent
    return run_dir if (run_dir / ".hydra" / "config.yaml").is_file() else None


#: the label suffix of a run scored on a validation subset: its own row, never averaged with full runs
SUBSET_MARK = "[eval subset]"


def _read_metrics(path: Path) -> tuple[dict[str, float], dict[str, Any], dict[str, Any] | None]:
    """The numeric metrics of a metrics.json, its ``attention`` health figures ({} without), and its
    ``eval_subset`` (None when it was scored on the whole query/gallery)."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ReportError(f"{path} is not valid JSON ({err}): delete it or re-run that job") from None
    if not isinstance(raw, dict):
        raise ReportError(
            f"{path} must hold a JSON object of metrics, got {type(raw).__name__}: delete it or re-run that job"
        )
    metrics = {}
    for key, value in raw.items():
        number = _as_float(value)
        if number is not None:
            metrics[str(key)] = number
    for test_set, scores in (raw.get("test_sets") or {}).items():  # data.test_sets: "test_sets/<name>/<metric>"
        for key, value in (scores if isinstance(scores, dict) else {}).items():
            number = _as_float(value)
            if number is not None:
                metrics[f"test_sets/{test_set}/{key}"] = number
    attention = raw.get("attention")
    subset = raw.get("eval_subset")
    return metrics, attention if isinstance(attention, dict) else {}, subset if isinstance(subset, dict) else None


def _provenance(path: Path) -> dict[str, Any]:
    """The run's ``provenance.json`` beside its metrics.json ({} without: a run from before it was recorded)."""
    try:
        recorded = json.loads((path.parent / PROVENANCE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return recorded if isinstance(recorded, dict) else {}


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


def _natural_key(path: Path) -> list[tuple[int, int | str]]:
    """Sorts multirun job folders 0, 1, 2, ..., 10 rather than 0, 1, 10, 2."""
    return [(0, int(part)) if part.isdigit() else (1, part) for part in path.parts]


def _metrics_files(root: Path) -> list[Path]:
    """metrics.json files below ``root``, leaving out any inside another run's folder (e.g. a logger's)."""
    found = []
    for path in sorted(root.rglob("metrics.json"), key=_natural_key):
        nested = any(
            (parent / ".hydra").is_dir() for parent in path.parent.parents if parent == root or root in parent.parents
        )
        if not nested:
            found.append(path)
    return found


def collect_runs(paths: Iterable[str | Path]) -> list[RunResult]:
    """Every run (a folder with metrics.json) below the given folders, in path order.

    Args:
        paths: multirun folders (``outputs/train/multiruns/<date_time>``), run folders, or any
            folder above them.

    Raises:
        ReportError: a folder does not exist, none holds a metrics.json, or one is unreadable.
    """
    roots = [Path(p) for p in paths]
    if not roots:
        raise ReportError(
            "no folder given: pass a multirun folder (outputs/train/multiruns/<date_time>) or run folders"
        )
    for root in roots:
        if not root.is_dir():
            raise ReportError(
                f"{root} is not a folder: pass a multirun folder (outputs/train/multiruns/<date_time>) or run folders"
            )
    seen: set[Path] = set()
    runs: list[RunResult] = []
    for root in roots:
        for metrics_path in _metrics_files(root):
            if metrics_path.resolve() in seen:
                continue
            seen.add(metrics_path.resolve())
            run_dir = metrics_path.parent
            model, data, lambda_intra, beta, overrides, notes = _describe_run(run_dir)
            metrics, attention, subset = _read_metrics(metrics_path)
            if subset is not None:
                model = f"{model}{SUBSET_MARK}"
                notes.append(
                    f"{run_dir}: scored on a validation subset ({subset.get('setting', '?')}: "
                    f"{subset.get('queries', '?')} of {subset.get('total_queries', '?')} queries), so it has a row "
                    "of its own, never averaged with runs scored on the whole set"
                )
            runs.append(
                RunResult(
                    run_dir,
                    model,
                    data,
                    lambda_intra,
                    beta,
                    metrics,
                    overrides,
                    notes,
                    attention,
                    _provenance(metrics_path),
                )
            )
    if not runs:
        names = ", ".join(str(r) for r in roots)
        raise ReportError(
            f"no metrics.json below {names}: train first, e.g. `{sweep_command()}` "
            "(runs write metrics.json when training ends)"
        )
    return runs


def incomplete_runs(paths: Iterable[str | Path]) -> list[Path]:
    """Job folders (holding ``.hydra/``) below the given folders that have no metrics.json, in path order.

    They are left out of the report: still running, failed or killed, or trained without a final
    validation (``final_validation=false``, ``trainer.limit_val_batches=0``). A job folder inside
    another one (a logger's) is not a job. Folders that do not exist are skipped (``collect_runs``
    reports them).
    """
    found: dict[Path, Path] = {}
    for root in (Path(p) for p in paths):
        if not root.is_dir():
            continue
        candidates = [root] if (root / ".hydra").is_dir() else []
        candidates += [hydra.parent for hydra in root.rglob(".hydra") if hydra.is_dir() and hydra.parent != root]
        for job in candidates:
            nested = any(
                (parent / ".hydra").is_dir() for parent in job.parents if root in parent.parents or parent == root
            )
            if not nested and not (job / "metrics.json").is_file():
                found.setdefault(job.resolve(), job)
    return sorted(found.values(), key=_natural_key)


def _incomplete_note(incomplete: Sequence[Path]) -> str:
    return (
        f"{len(incomplete)} job folder{'s' if len(incomplete) != 1 else ''} without metrics.json left out (still "
        "running, failed or killed, or trained without a final validation): "
        + ", ".join(str(path) for path in incomplete)
    )


# ---------------------------------------------------------------------------------------------
# formatting


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


def paired_table(runs: Sequence[RunResult]) -> str:
    """Paired differences: each model against the one before it in Table 6's order, seed by seed.

    Runs pair when they share the data set, λ, β and ``seed=``; a difference is taken per seed
    and then averaged (mean ± sample std over the seeds), for R1 and mAP on the data set itself
    and on each of its ``data.test_sets``. Empty when no two models share a seed.
    """
    by_key: dict[tuple[str, float | None, float | None], dict[str, dict[str, RunResult]]] = defaultdict(
        lambda: defaultdict(dict)
    )
    for run in runs:
        seed = _seed(run)
        if seed is not None:
            by_key[(run.data, _setting(run.lambda_intra), _setting(run.beta))][run.model][seed] = run
    rows = []
    for (data, lam, beta), models in sorted(by_key.items(), key=lambda item: _data_rank(item[0][0])):
        ordered = sorted(models, key=_model_rank)
        for before, after in zip(ordered, ordered[1:]):
            seeds = sorted(set(models[before]) & set(models[after]), key=lambda s: (len(s), s))
            if not seeds:
                continue
            pairs = [(models[before][s], models[after][s]) for s in seeds]
            sets = sorted({k.split("/")[1] for _, run in pairs for k in run.metrics if k.startswith("test_sets/")})
            for where, prefix in [(data_label(data), "")] + [
                (f"{data_label(data)} → {t}", f"test_sets/{t}/") for t in sets
            ]:
                cells = []
                for key in ("rank1", "mAP"):
                    diffs = [
                        b.metrics.get(prefix + key, math.nan) - a.metrics.get(prefix + key, math.nan) for a, b in pairs
                    ]
                    mean, std, n = _stats(diffs)
                    cells.append("–" if n == 0 else f"{mean:+.2f}" + (f" ± {std:.2f}" if n > 1 else ""))
                rows.append(
                    [f"{after} − {before}", format_lambda(lam), format_beta(beta), where, str(len(pairs))] + cells
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


# ---------------------------------------------------------------------------------------------
# Tables 10 and 11


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
        series: dict[str, tuple[list[float], list[float]]] = {}
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


# ---------------------------------------------------------------------------------------------
# the report


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


def render_report(
    runs: Sequence[RunResult], plots: dict[str, str] | None = None, incomplete: Sequence[Path] = ()
) -> str:
    """The report's Markdown; ``plots`` maps a sweep's plot name to the file to link (none: no images);
    ``incomplete``: job folders without metrics.json, named in the notes (:func:`incomplete_runs`)."""
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
    curves = sorted(name for name in (plots or {}) if name.startswith("curves_"))
    if curves:
        parts += ["## Training curves", ""] + [f"![{name}]({plots[name]})" for name in curves] + [""]
    notes = [note for run in runs for note in run.notes]
    if incomplete:
        notes.append(_incomplete_note(incomplete))
    if notes:
        parts += ["## Notes", ""] + [f"- {note}" for note in notes] + [""]
    parts += ["## Runs", "", _runs_table(runs), ""]
    return "\n".join(parts)


def summary_markdown(runs: Sequence[RunResult], command: str | None = None) -> str:
    """Table 6 and the attention health table, for pasting into another document (``into=``)."""
    parts = []
    if command:
        parts += [f"Produced by `{command}` from {len(runs)} runs (mean ± sample std over n runs).", ""]
    parts += [provenance_line(runs), ""]
    parts += [ablation_table(runs), ""]
    paired = paired_table(runs)
    if paired:
        parts += [
            "Paired by seed (each model minus the one before it, same seed; mean ± std over seeds):",
            "",
            paired,
            "",
        ]
    health = attention_health_table(runs)
    if health:
        parts += ["Attention health of the final models (query images):", "", health, ""]
    return "\n".join(parts).rstrip() + "\n"


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


def write_report(runs: Sequence[RunResult], out_dir: str | Path, incomplete: Sequence[Path] = ()) -> Path:
    """Writes ``report.md`` and the sweep plots (``sweep_<lambda|beta>_<model>_<data>.png``) into ``out_dir``.

    ``incomplete``: job folders without metrics.json, named in the report's notes.

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
    return atomic_write_text(out_dir / "report.md", render_report(runs, plots, incomplete))


@dataclass
class ReportOptions:
    """The options of ``reid-report`` (``key=value``; bare arguments are ``paths``)."""

    paths: List[str] = option([], "multirun folders, run folders, or folders above them", positional=True)
    out: Optional[str] = option(None, "where report.md and the plots go (default: the first folder)")
    into: Optional[str] = option(
        None,
        "also write Table 6 and the attention health table into this Markdown file "
        "(e.g. README.md), between <!-- reid.report:NAME --> and <!-- /reid.report:NAME -->",
    )
    name: str = option("ablation", "the marked block of `into` to replace")
    command: Optional[str] = option(None, "the command that produced the runs, quoted in the `into` block")


def report(options: ReportOptions) -> int:
    """Tabulates finished runs: writes report.md (+ PNGs) and prints its Markdown."""
    if not options.paths:
        raise ReportError("no run folders given (fix: reid-report outputs/train/multiruns/<date_time> [more folders])")
    paths = [Path(path) for path in options.paths]
    runs = collect_runs(paths)
    incomplete = incomplete_runs(paths)
    written = write_report(runs, Path(options.out) if options.out else paths[0], incomplete)
    if options.into:
        replace_marked_block(Path(options.into), options.name, summary_markdown(runs, options.command))
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


if __name__ == "__main__":
    sys.exit(main())
