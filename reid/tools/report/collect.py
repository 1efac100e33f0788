"""Finding run folders and reading them: model variant, data set, lambda, beta, metrics, provenance."""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from reid.names import PROVENANCE_FILE
from reid.tools.report.runs import (
    BETA_KEY,
    DATASET_GROUPS,
    LAMBDA_KEY,
    UNKNOWN,
    ReportError,
    RunResult,
    sweep_command,
)
from reid.variants import model_variants

# the package's logger (``reid.tools.report``), as when the report was one module
log = logging.getLogger(__package__)


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


def _data_group(config: DictConfig | ListConfig | None) -> str:
    """The data config group, guessed from the composed config (for runs without hydra.yaml)."""
    name = _select(config, "data.name")
    if name is None:
        return UNKNOWN
    if name == "cuhk03":
        return "cuhk03_labeled" if _select(config, "data.options.labeled") else "cuhk03_detected"
    return DATASET_GROUPS.get(str(name), str(name))


def _model_variant(config: DictConfig | ListConfig | None) -> str:
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


#: command-line settings besides the model's that change what trains: a run with one is its own variant
#: (``data.pipeline=device`` cuts the crops by another path, equal to the CPU path's only within a tolerance;
#: ``data.pose.visibility`` changes the keypoint visibility the model weighs or learns from; erasing
#: changes the training images)
VARIANT_DATA_KEYS = (
    "data.pipeline",
    "data.pose.visibility",
    "data.augment.random_erasing",
    "data.augment.erasing_fill",
)


def _model_overrides(overrides: Sequence[str]) -> list[str]:
    """Command-line changes to the model other than lambda, and to :data:`VARIANT_DATA_KEYS`: a different variant."""
    return sorted(
        o
        for o in overrides
        if (o.lstrip("+~").startswith("model.") and not o.lstrip("+~").startswith(LAMBDA_KEY))
        or o.lstrip("+~").split("=", 1)[0] in VARIANT_DATA_KEYS
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


def _training_run_of(config: DictConfig | ListConfig, hydra: DictConfig | ListConfig | None) -> Path | None:
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


def _read_metrics(path: Path) -> tuple[dict[str, float], dict[str, Any], dict[str, Any] | None, str | None]:
    """The numeric metrics of a metrics.json, its ``attention`` health figures ({} without), its
    ``eval_subset`` (None when it was scored on the whole query/gallery) and the visibility matching
    it was scored with (None: plain distances).

    An evaluate.py run with ``eval.visibility_matching`` reports the visibility-matched scores as its
    metrics (the plain ones stay under ``plain/<metric>``): the run is that matching's row.
    """
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
    branches = raw.get("branches")
    for row, scores in (branches if isinstance(branches, dict) else {}).items():  # evaluate.py: Table 7's rows
        for key, value in (scores if isinstance(scores, dict) else {}).items():
            number = _as_float(value)
            if number is not None:
                metrics[f"branches/{row}/{key}"] = number
    attention = raw.get("attention")
    subset = raw.get("eval_subset")
    matching = raw.get("visibility_matching")
    source = None
    if isinstance(matching, dict) and matching.get("source") not in (None, "none"):
        source = str(matching["source"])
        for key, value in list(metrics.items()):
            if "/" not in key and _as_float(matching.get(key)) is not None:
                metrics[f"plain/{key}"] = value
                metrics[key] = float(matching[key])
    return (
        metrics,
        attention if isinstance(attention, dict) else {},
        subset if isinstance(subset, dict) else None,
        source,
    )


def _provenance(path: Path) -> dict[str, Any]:
    """The run's ``provenance.json`` beside its metrics.json ({} without: a run from before it was recorded)."""
    try:
        recorded = json.loads((path.parent / PROVENANCE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return recorded if isinstance(recorded, dict) else {}


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
            metrics, attention, subset, matching = _read_metrics(metrics_path)
            if matching is not None:  # one bracket of options: "m[a=1][b=2]" would be a Markdown reference link
                model = f"{model[:-1]},matching={matching}]" if model.endswith("]") else f"{model}[matching={matching}]"
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
