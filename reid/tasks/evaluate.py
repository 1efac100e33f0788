"""The evaluate task (`reid-evaluate`): score a checkpoint or saved features with the settings it was trained with."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from reid.checkpoints import CONFIG_KEY, load_checkpoint
from reid.files import retry_when_full
from reid.memory import apply_memory_setting
from reid.tasks.common import (
    build_datamodule,
    build_test_sets,
    eval_options,
    write_metrics,
    write_provenance,
)

log = logging.getLogger(__name__)

# what to do once a full disk has space again: the outputs are rewritten whole
RETRY = "run evaluate.py again (`python evaluate.py <same overrides>`)"


def _eval_device(cfg: DictConfig) -> torch.device:
    """``eval.device``: ``auto`` takes the GPU when there is one and the trainer may use it."""
    choice = str(cfg.eval.get("device", "auto"))
    if choice == "auto":
        wants_cpu = str(cfg.trainer.get("accelerator", "auto")) == "cpu"
        return torch.device("cuda" if torch.cuda.is_available() and not wants_cpu else "cpu")
    return torch.device(choice)


def _use_stored_model_config(cfg: DictConfig, checkpoint: dict[str, Any]) -> None:
    """The weights define the architecture (and its input regions): take the model config they were trained with."""
    stored = checkpoint.get(CONFIG_KEY)
    if stored and "model" in stored:
        with open_dict(cfg):
            cfg.model = OmegaConf.create(stored["model"])
            cfg.model.pretrained = None  # the checkpoint's weights replace the pre-trained ones anyway
        log.info("using the model config stored in %s", cfg.ckpt_path)


# what the network saw in training: evaluate.py takes them from the checkpoint unless given explicitly
INPUT_KEYS = (
    "whole_size",
    "part_size",
    "beta",
    "augment.normalize",
    "augment.mean",
    "augment.scale",
    "pose.min_conf",
    "pose.min_joints",
    "pose.max_outside",
    "pose.visibility",
    "strips.layout",
)


def input_settings(cfg: DictConfig) -> dict[str, Any]:
    """The input settings this evaluation used (the regions and :data:`INPUT_KEYS`), as plain values.

    Recorded in metrics.json under ``input_settings``: they may come from the checkpoint, so the
    run's own ``.hydra/config.yaml`` does not hold them (``reid-report`` reads them from here).
    """
    settings: dict[str, Any] = {}
    for key in ("regions", *INPUT_KEYS):
        value = OmegaConf.select(cfg.data, key, default=None)
        settings[key] = (
            OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value
        )
    return settings


def _explicit_overrides() -> set[str]:
    """The keys set on the command line of this Hydra run (an empty set outside Hydra)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return set()
    keys = set()
    for override in HydraConfig.get().overrides.task:
        key = override.split("=", 1)[0].lstrip("+~")
        keys.add(key)
    return keys


def use_stored_input_config(cfg: DictConfig, checkpoint: dict[str, Any], explicit: set[str] | None = None) -> list[str]:
    """Takes the ``data`` settings that define the network's input (:data:`INPUT_KEYS`) from the checkpoint.

    A key given explicitly (``explicit``, default: this run's command line) wins, with a logged
    notice that it differs from training. Returns the notices (one per differing key).
    """
    stored = (checkpoint.get(CONFIG_KEY) or {}).get("data")
    if not stored:
        return []
    explicit = _explicit_overrides() if explicit is None else explicit
    stored_cfg = OmegaConf.create(stored)
    notices = []
    for key in INPUT_KEYS:
        trained = OmegaConf.select(stored_cfg, key, default=None)
        current = OmegaConf.select(cfg.data, key, default=None)
        if trained is None or trained == current:
            continue
        shown_trained = OmegaConf.to_container(trained) if isinstance(trained, (DictConfig, ListConfig)) else trained
        if f"data.{key}" in explicit:
            notices.append(f"data.{key}={current} as given, but the checkpoint was trained with {shown_trained}")
            log.warning(
                "evaluating with data.%s=%s as given; the checkpoint was trained with %s", key, current, shown_trained
            )
            continue
        with open_dict(cfg):
            OmegaConf.update(cfg.data, key, trained, merge=False)
        log.info("data.%s=%s from the checkpoint (this config had %s)", key, shown_trained, current)
    return notices


def condition_config(checkpoint: dict[str, Any], overrides: Sequence[str] = (), keep: Sequence[str] = ()) -> DictConfig:
    """train.py's config with ``overrides`` (a test condition), read as the checkpoint's network saw its input.

    What evaluate.py does for ``ckpt_path``, for the analysis scripts of ``scripts/`` that score a
    checkpoint on several conditions: the settings of :data:`INPUT_KEYS` come from the
    checkpoint's stored data config, except the ``data.`` keys named in ``keep`` (set in
    ``overrides`` on purpose, with a logged notice where they differ); the loaders run in this
    process (``data.num_workers=0``).
    """
    from reid.conf import compose_config

    cfg = compose_config(list(overrides))
    use_stored_input_config(cfg, checkpoint, explicit={f"data.{key}" for key in keep})
    with open_dict(cfg):
        cfg.data.num_workers = 0
    return cfg


def _model_from_checkpoint(cfg: DictConfig, checkpoint: dict[str, Any], protocol: str) -> Any:
    """The checkpoint's module, built from its stored config as data (never Hydra's instantiate on a file)."""
    from reid.lit.module import ReIDModule

    return ReIDModule.from_checkpoint(checkpoint, str(cfg.ckpt_path), eval_options=eval_options(cfg, protocol))


def knockout_scores(module: Any, datamodule: Any, cfg: DictConfig) -> dict[str, dict[str, float]]:
    """The global + part feature's metrics with the attention masks flattened.

    See ``reid.models.attention.attention_knockout``.
    """
    from reid.evaluation import score_datamodule
    from reid.models.attention import KNOCKOUTS, attention_knockout

    options = cast(dict[str, Any], OmegaConf.to_container(cfg.eval, resolve=True))  # eval is a mapping
    scores = {}
    for mode in KNOCKOUTS:
        with attention_knockout(module.net, mode):
            scores[mode] = score_datamodule(module, datamodule, options, _eval_device(cfg))
        log.info("attention knocked out (%s): rank-1 %.4f, mAP %.4f", mode, scores[mode]["rank1"], scores[mode]["mAP"])
    return scores


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Scores a checkpoint (or saved features) on the query/gallery of ``cfg.data``.

    Writes ``metrics.json`` (the global + part feature's metrics at the top level, every Table 7
    row under ``branches``, re-ranked results under ``rerank``), ``report.md`` and the pictures
    into the run directory, and prints the table.
    """
    from reid.conf.validate import validate_config
    from reid.evaluation import (
        FeatureSet,
        ScoringOptions,
        extract_features,
        plain_metrics,
        rerank_scores,
        results_table,
        score_features,
    )
    from reid.evaluation.report import query_counts, write_evaluation_outputs
    from reid.metrics.attention_health import AttentionHealth, health_summary

    validate_config(cfg)
    apply_memory_setting(bool(cfg.get("retain_freed_memory", True)))
    e = cfg.eval
    attention: dict[str, Any] = {}
    knockout: dict[str, dict[str, float]] = {}
    input_notices: list[str] = []
    used_input: dict[str, Any] = {}
    output_dir = Path(cfg.paths.output_dir)
    module = datamodule = None
    if cfg.get("features_path"):
        features = FeatureSet.load(cfg.features_path)
        log.info("scoring the saved features %s (no model)", cfg.features_path)
    else:
        if not cfg.get("ckpt_path"):
            raise FileNotFoundError(
                "nothing to evaluate: pass ckpt_path=<run dir>/checkpoints/last.ckpt or features_path=<features.pt>"
            )
        checkpoint = load_checkpoint(cfg.ckpt_path)
        _use_stored_model_config(cfg, checkpoint)  # before the data: data.regions follows model.regions
        input_notices = use_stored_input_config(cfg, checkpoint)
        used_input = input_settings(cfg)
        datamodule = build_datamodule(cfg)
        module = _model_from_checkpoint(cfg, checkpoint, datamodule.dataset.protocol)
        eval_set = datamodule.eval_set
        health = AttentionHealth(keep_mu_values=False)
        features = extract_features(
            module,
            datamodule.val_dataloader(),
            paths=[r.image_path for r in eval_set.records],
            boxes=eval_set.boxes,
            protocol=datamodule.dataset.protocol,
            flip=bool(e.flip),
            device=_eval_device(cfg),
            # visibility matching compares branch by branch: it needs the global and part rows
            rows=None if e.branches or e.get("visibility_matching", "none") != "none" else ["all"],
            attention_health=health,
        )
        attention = health.compute()
        if e.attention_knockout and getattr(module.net, "intra_attention", False):
            knockout = knockout_scores(module, datamodule, cfg)
        features.meta.update({"ckpt_path": str(cfg.ckpt_path), "data": str(cfg.data.name)})
        if e.save_features:
            with retry_when_full(RETRY):
                features.save(output_dir / "features.pt")

    scoring = ScoringOptions.from_config(e)
    rows = list(features.features) if e.branches else ["all"]
    results = score_features(features, rows=rows, **scoring.score_kwargs())
    matching = str(e.get("visibility_matching", "none"))
    if matching != "none":
        from reid.evaluation.scoring import visibility_scores

        results["all_visibility"] = visibility_scores(
            features,
            source=matching,
            distance=scoring.distance,
            max_rank=scoring.max_rank,
            **scoring.protocol_kwargs(),
        )
    if e.rerank:
        results["all_rerank"] = rerank_scores(
            features,
            distance=scoring.distance,
            k1=int(e.rerank_k1),
            k2=int(e.rerank_k2),
            lambda_value=float(e.rerank_lambda),
            max_images=int(e.rerank_max_images),
            max_rank=scoring.max_rank,
            **scoring.protocol_kwargs(),
        )
    metrics: dict[str, Any] = dict(plain_metrics(results["all"]))
    metrics["branches"] = {
        row: plain_metrics(r) for row, r in results.items() if row not in ("all_rerank", "all_visibility")
    }
    if "all_visibility" in results:
        metrics["visibility_matching"] = {"source": matching, **plain_metrics(results["all_visibility"])}
    if "all_rerank" in results:
        metrics["rerank"] = plain_metrics(results["all_rerank"])
    if input_notices:
        metrics["input_differs_from_training"] = input_notices
    if used_input:
        metrics["input_settings"] = used_input
    metrics["queries"] = query_counts(features)
    if module is not None and cfg.data.get("test_sets"):
        from reid.lit.cross_dataset import score_test_sets

        test_set_options = cast(dict[str, Any], OmegaConf.to_container(e, resolve=True))  # eval is a mapping
        metrics["test_sets"] = score_test_sets(module, build_test_sets(cfg), test_set_options)
    if knockout:
        attention["knockout"] = knockout
    if attention:
        metrics["attention"] = attention
        log.info("attention health on the query images: %s", health_summary(attention))
    labels = {
        "all_rerank": "Global + part, re-ranked",
        "all_visibility": f"Global + part, visibility-weighted ({matching})",
    }
    table = results_table({labels.get(k, k): v for k, v in results.items()})
    with retry_when_full(RETRY):
        write_metrics(metrics, output_dir)
        write_provenance(output_dir)
        write_evaluation_outputs(
            cfg,
            features,
            results,
            table,
            output_dir,
            module=module,
            attention_health=attention,
            eval_set=datamodule.eval_set if datamodule is not None else None,
        )
    print(table)
    return metrics
