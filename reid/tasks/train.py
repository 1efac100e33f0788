"""The train task (`reid-train`): instantiate, fit, validate the final weights, write metrics.json."""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path
from typing import Any, cast

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from reid.errors import ReidError
from reid.memory import apply_memory_setting
from reid.tasks.common import (
    InterruptCheckpoint,
    StoreConfigInCheckpoint,
    build_datamodule,
    build_model,
    build_test_sets,
    configure_wandb_env,
    format_table,
    instantiate_group,
    metrics_from,
    terminated_as_error,
    write_metrics,
    write_provenance,
)

log = logging.getLogger(__name__)


def warn_if_pretraining_missing(cfg: DictConfig) -> bool:
    """One warning line when the recipe expects pre-trained weights (``expect_pretrained``) and none are given."""
    if not cfg.get("expect_pretrained") or cfg.model.get("pretrained") or cfg.get("ckpt_path"):
        return False
    log.warning(
        "warning: this recipe fine-tunes from ImageNet pre-training (paper §4.1.3) but model.pretrained is not set, "
        "so it trains from scratch; pre-train with `train.py experiment=imagenet_pretrain` and pass "
        "model.pretrained=<that run>/checkpoints/last.ckpt (or expect_pretrained=false to silence this)"
    )
    return True


def _limit_validation(cfg: DictConfig, datamodule: Any) -> dict[str, Any] | None:
    """Applies the trainer's validation limit as a consistent query/gallery subset (see ``limit_eval``).

    ``trainer.limit_val_batches`` (an int: batches, a float: a fraction), ``fast_dev_run``
    (its batches; at least one whole identity) and ``overfit_batches`` (its batches; a
    fraction is refused) all cut the validation loader, which serves every query before the
    gallery. The data module serves a subset of whole identities instead; with
    ``limit_val_batches`` the trainer must then be built with ``limit_val_batches=1.0`` (the
    run's stored config keeps the user's value). 0 (no validation) stays Lightning's.
    """
    from reid.errors import ConfigError

    if not hasattr(datamodule, "limit_eval"):
        return None
    trainer_cfg = cfg.trainer
    fast_dev_run = trainer_cfg.get("fast_dev_run", False)
    overfit = trainer_cfg.get("overfit_batches", 0) or 0
    if fast_dev_run:
        batches = 1 if fast_dev_run is True else int(fast_dev_run)
        subset = datamodule.limit_eval(batches, at_least_one=True, setting="trainer.fast_dev_run")
    elif overfit:
        if isinstance(overfit, float) and not overfit.is_integer():
            raise ConfigError(
                [
                    f"trainer.overfit_batches={overfit}: give a number of batches (e.g. 3); a fraction would cut "
                    "validation between the queries and their gallery"
                ]
            )
        subset = datamodule.limit_eval(int(overfit), at_least_one=True, setting="trainer.overfit_batches")
    else:
        limit = trainer_cfg.get("limit_val_batches", 1.0)
        if limit is None or limit == 0 or (isinstance(limit, float) and limit >= 1.0):
            return None
        subset = datamodule.limit_eval(limit)
    return subset


class NothingTrainedError(ReidError, RuntimeError):
    """``trainer.fit`` made no optimizer step: the weights are untrained, so no result may be written."""


def check_something_to_train(cfg: DictConfig, datamodule: Any, trainer: pl.Trainer) -> None:
    """Refuses, before fit, settings under which not one optimizer step can be made.

    Lightning skips training then ("No training batches", "max_steps=0 reached") and the final
    validation would score the initial weights as if they were the result. ``trainer.max_epochs=0``
    and ``limit_train_batches=0`` are refused by the schema already.

    Raises:
        ConfigError: ``trainer.max_steps=0``, or no complete training batch per epoch (naming
            ``data.batch_size`` and the training images) or none left by ``limit_train_batches``.
    """
    from reid.errors import ConfigError

    trainer_cfg = cfg.trainer
    if not trainer_cfg.get("fast_dev_run") and trainer_cfg.get("max_steps") == 0:
        raise ConfigError(
            [
                "trainer.max_steps=0 trains nothing, and the final validation would score untrained weights: "
                "remove it (or -1: no limit) or give a number of steps >= 1; evaluate.py scores an existing checkpoint"
            ]
        )
    if not hasattr(datamodule, "train_batches_per_epoch"):
        return
    processes = max(1, int(trainer.num_nodes) * int(trainer.num_devices))
    batches = datamodule.train_batches_per_epoch(processes)  # raises when there is no complete batch
    # fast_dev_run and overfit_batches replace limit_train_batches (Lightning)
    replaced = trainer_cfg.get("fast_dev_run") or trainer_cfg.get("overfit_batches")
    limit = None if replaced else trainer_cfg.get("limit_train_batches")
    if isinstance(limit, float) and 0 < limit < 1 and int(batches * limit) == 0:
        raise ConfigError(
            [
                f"trainer.limit_train_batches={limit} keeps no batch of the {batches} training batches per epoch "
                f"(data.batch_size={datamodule.batch_size}): raise it to at least "
                f"{math.ceil(1000 / batches) / 1000:g}, or give a number of batches (e.g. 1)"
            ]
        )


def check_visibility_label(cfg: DictConfig) -> None:
    """Refuses visibility settings that cannot learn: a label that cannot exist, or a visibility map with no loss.

    Raises:
        ConfigError: ``visibility_target`` erasing or both without ``data.augment.random_erasing``;
            ``model.net.inter_source=map`` with ``model.visibility_loss=0``; ``erasing_map`` without a
            visibility map; ``inter_source=keypoints`` on crops that read no keypoints.
    """
    from reid.errors import ConfigError

    model = cfg.get("model") or {}
    target = model.get("visibility_target", "keypoints")
    erasing = float(((cfg.get("data") or {}).get("augment") or {}).get("random_erasing", 0.0) or 0.0)
    net = model.get("net") or {}
    if (
        net.get("fusion") == "inter"
        and net.get("inter_source") == "map"
        and not float(model.get("visibility_loss") or 0)
    ):
        raise ConfigError(
            [
                "model.net.inter_source=map learns each part's visibility from model.visibility_loss alone, "
                "which is 0: set it > 0 (e.g. model.visibility_loss=1), or model.net.inter_source=feature"
            ]
        )
    regions = (cfg.get("data") or {}).get("regions", model.get("regions", "pose"))
    if net.get("fusion") == "inter" and net.get("inter_source") == "keypoints" and regions != "pose":
        raise ConfigError(
            [
                f"model.net.inter_source=keypoints weighs each part by its joints' keypoint confidence, but "
                f"data.regions={regions} reads no keypoints: use a model with pose-aligned crops (model=intra_inter), "
                "or model.net.inter_source=feature"
            ]
        )
    if net.get("inter_source") == "keypoints" and float(model.get("visibility_loss") or 0) > 0:
        raise ConfigError(
            [
                "model.visibility_loss > 0 trains a learned part weight, but model.net.inter_source=keypoints "
                "takes the weights from the keypoints, with nothing to learn: set model.visibility_loss=0"
            ]
        )
    if target == "erasing_map" and float(model.get("visibility_loss") or 0) > 0 and net.get("inter_source") != "map":
        raise ConfigError(
            [
                "model.visibility_target=erasing_map teaches the part branches' visibility map where erasing fell, "
                "but the network has none: set model.net.inter_source=map (with model.net.fusion=inter)"
            ]
        )
    if float(model.get("visibility_loss", 0.0) or 0.0) > 0 and target != "keypoints" and erasing <= 0:
        raise ConfigError(
            [
                f"model.visibility_target={target} learns visibility from what random erasing hides, but "
                "data.augment.random_erasing=0: set it > 0 (e.g. data.augment.random_erasing=0.5), or "
                "model.visibility_target=keypoints"
            ]
        )


def check_training_split(cfg: DictConfig) -> None:
    """Refuses, before anything is read, to train on a data set that has no training split.

    Occluded-REID and Partial-REID have none.

    Raises:
        ConfigError: naming the data set and the two ways to score it: as a test set beside a
            training set (``data.test_sets``), or with ``evaluate.py``.
    """
    from reid.data.datasets import is_test_only
    from reid.errors import ConfigError

    name = str((cfg.get("data") or {}).get("name") or "")
    if name and is_test_only(name):
        raise ConfigError(
            [
                f"data={name} has no training split (it is a test set: a query and a gallery only): train on "
                f"another set and score {name} beside it, e.g. `train.py data=market data.test_sets=[{name}]`, "
                f"or score a trained checkpoint with `evaluate.py ckpt_path=<run>/checkpoints/last.ckpt data={name}`"
            ]
        )


def check_trained(trainer: pl.Trainer, cfg: DictConfig) -> None:
    """After fit: at least one optimizer step was made (a resumed run counts the steps of its checkpoint).

    Raises:
        NothingTrainedError: ``trainer.global_step`` is 0, naming the likely cause and the fix.
    """
    if trainer.global_step > 0:
        return
    data = cfg.get("data") or {}
    if trainer.num_training_batches == 0:
        cause = (
            f"the training loader gave no complete batch (data.batch_size={data.get('batch_size')}, "
            f"trainer.limit_train_batches={cfg.trainer.get('limit_train_batches')})"
        )
    else:
        cause = (
            f"training stopped before its first step (trainer.max_steps={cfg.trainer.get('max_steps', -1)}, "
            f"trainer.max_epochs={cfg.trainer.get('max_epochs')})"
        )
    raise NothingTrainedError(
        f"trainer.fit made 0 optimizer steps: {cause}, so the weights are untrained and no metrics.json was "
        "written; lower data.batch_size to at most the training images per process, or raise "
        "trainer.limit_train_batches / trainer.max_steps"
    )


def train(cfg: DictConfig) -> dict[str, float]:
    """Fits the model of ``cfg`` on its data, validates the final weights, writes metrics.json.

    In a Hydra multirun, DDP processes re-run this job only (:func:`reid.launch.prepare_ddp_children`)
    and no distributed state outlives the job (:func:`reid.launch.isolated_job`).
    """
    from reid.launch import isolated_job

    with isolated_job():
        return _fit_and_validate(cfg)


def _fit_and_validate(cfg: DictConfig) -> dict[str, float]:
    from reid.tasks.common import provenance

    started = provenance()  # the code that trains is the code checked out now
    from reid.conf.validate import validate_config
    from reid.launch import multirun_group, prepare_ddp_children, rank_summary
    from reid.lit.resume import (
        CHECKPOINT_DIR,
        AtomicCheckpointIO,
        RandomStateCheckpoint,
        add_wandb_resume,
        resolve_ckpt_path,
    )
    from reid.rundir import commit_replaced_results

    validate_config(cfg)
    apply_memory_setting(bool(cfg.get("retain_freed_memory", True)))
    check_training_split(cfg)
    configure_wandb_env()
    prepare_ddp_children(cfg)
    log.info("hyper-parameters of this process: %s", rank_summary(cfg))
    group = multirun_group()
    if group and cfg.get("logger") and "wandb" in cfg.logger and not cfg.logger.wandb.get("group"):
        with open_dict(cfg):
            cfg.logger.wandb.group = group  # the runs of one sweep side by side on W&B
    if cfg.get("seed") is not None:
        pl.seed_everything(int(cfg.seed), workers=True)
    output_dir = Path(cfg.paths.output_dir)
    # ckpt_path=last|auto|<run dir>|<file>: resume a killed run where its last checkpoint left it
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), output_dir)
    with open_dict(cfg):
        add_wandb_resume(cfg.get("logger"), output_dir, resuming=ckpt_path is not None)
    if ckpt_path is not None:
        # a resumed run writes into its own checkpoint folder on purpose
        warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")

    warn_if_pretraining_missing(cfg)
    datamodule = build_datamodule(cfg)
    test_sets = build_test_sets(cfg)
    eval_subset = _limit_validation(cfg, datamodule)
    if ckpt_path and cfg.model.get("pretrained"):
        with open_dict(cfg):
            cfg.model.pretrained = None  # resuming: the checkpoint's weights win, the file need not exist
    model = build_model(cfg, datamodule.num_classes, datamodule.dataset.protocol)
    resolved = cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True))  # a DictConfig gives a dict
    callbacks = instantiate_group(cfg.get("callbacks"))
    interrupt_checkpoint = InterruptCheckpoint(output_dir / CHECKPOINT_DIR / "last.ckpt")
    callbacks += [StoreConfigInCheckpoint(resolved), RandomStateCheckpoint(), interrupt_checkpoint]
    cross_dataset = None
    if test_sets:
        from reid.lit.cross_dataset import CrossDatasetValidation

        scoring = cast(dict[str, Any], OmegaConf.to_container(cfg.eval, resolve=True))  # eval is a mapping
        cross_dataset = CrossDatasetValidation(test_sets, scoring)
        callbacks.append(cross_dataset)
    if not cfg.trainer.get("enable_progress_bar", True):
        # `trainer.enable_progress_bar=false` alone should be enough to silence the bar
        callbacks = [c for c in callbacks if not isinstance(c, pl.callbacks.ProgressBar)]
    loggers = instantiate_group(cfg.get("logger"))
    if not loggers:
        # Lightning refuses a LearningRateMonitor without a logger; logger=none should just work
        callbacks = [c for c in callbacks if not isinstance(c, pl.callbacks.LearningRateMonitor)]
    trainer: pl.Trainer = instantiate(
        cfg.trainer,
        callbacks=callbacks,
        logger=loggers or False,
        plugins=[AtomicCheckpointIO()],
        # the data module serves the subset whole
        **({"limit_val_batches": 1.0} if eval_subset and eval_subset["setting"] == "trainer.limit_val_batches" else {}),
    )
    for logger in loggers:
        logger.log_hyperparams(resolved)

    check_something_to_train(cfg, datamodule, trainer)
    check_visibility_label(cfg)
    # set-up passed: only now may overwrite=true drop the previous run's results (a failure before keeps them)
    commit_replaced_results(output_dir)
    with terminated_as_error(trainer, output_dir, "training", interrupt_checkpoint):
        trainer.fit(model=model, datamodule=datamodule, ckpt_path=ckpt_path)
    check_trained(trainer, cfg)

    metrics: dict[str, Any] = {}
    if cfg.get("final_validation", True) and trainer.limit_val_batches == 0:
        log.info("trainer.limit_val_batches=0: no validation, so no final metrics and no metrics.json")
    elif cfg.get("final_validation", True):
        with terminated_as_error(trainer, output_dir, "the final validation", interrupt_checkpoint):
            results = trainer.validate(model=model, datamodule=datamodule, verbose=False)
        metrics.update(metrics_from(results[0] if results else {}))  # metrics is still empty here
        health = getattr(model, "last_attention_health", None)
        if health:
            metrics["attention"] = health
        if eval_subset:
            metrics["eval_subset"] = eval_subset
        if cross_dataset is not None and cross_dataset.last_results:
            metrics["test_sets"] = cross_dataset.last_results
        if trainer.is_global_zero:
            write_metrics(metrics, output_dir)
            write_provenance(output_dir, started)
            log.info("final validation on %s:\n%s", cfg.data.name, format_table(metrics))
    for logger in loggers:
        if hasattr(logger, "experiment") and hasattr(logger.experiment, "finish"):
            logger.experiment.finish()
    return metrics
