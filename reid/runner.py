"""What train.py and evaluate.py do with a composed config: instantiate, fit or score, write metrics.json."""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from reid.checkpoints import CONFIG_KEY, CheckpointLoadError, load_checkpoint  # noqa: F401 - part of the runner API
from reid.errors import ReidError

log = logging.getLogger(__name__)

# Lightning 2.6 trips over torch 2.13's pytree deprecation on every run; it is not ours to fix.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")

METRIC_KEYS = ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP", "top1", "top5")


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean bad input or a setting that cannot work: reported in one line, no traceback.

    The project's own derive from :class:`reid.errors.ReidError`; Lightning says
    ``MisconfigurationException`` of a trainer setting, and a missing file is a missing file.
    """
    from lightning_fabric.utilities.exceptions import MisconfigurationException

    return (ReidError, MisconfigurationException, FileNotFoundError)


class RunInterrupted(RuntimeError):
    """The run was terminated (SIGTERM) before it finished; the message says where and how to resume."""

    #: the exit status of a process ended by SIGTERM, as a shell reports it (128 + 15)
    exit_status = 143


class InterruptCheckpoint(pl.Callback):
    """Writes ``last.ckpt`` when training is terminated (SIGTERM), so that ``ckpt_path=last`` resumes there.

    Lightning stops at the next safe point (after the batch in progress, or at the epoch's
    end) by raising ``SIGTERMException``; the state there is the one a step checkpoint holds.
    A termination during validation saves nothing (the state between a batch and the end of
    validation is not one a run resumes from): the last step or epoch checkpoint stands.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.saved: Path | None = None

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        from pytorch_lightning.utilities.exceptions import SIGTERMException

        if isinstance(exception, SIGTERMException) and trainer.state.fn == "fit" and not trainer.validating:
            trainer.save_checkpoint(self.path)
            self.saved = self.path


def run_cli(function: Any, cfg: DictConfig) -> Any:
    """Runs ``function(cfg)``; bad input exits with status 2 and one ``error: ...`` line on stderr.

    Set ``REID_DEBUG=1`` to get the full traceback instead.
    """
    from hydra.errors import InstantiationException

    try:
        try:
            return function(cfg)
        except InstantiationException as err:
            # Hydra wraps what a constructor raised ("Error in call to target ..."): the cause is the message
            cause = err.__cause__
            raise (cause if isinstance(cause, user_errors()) else err) from None
    except RunInterrupted as err:
        print(f"error: {_last_line(str(err))}", file=sys.stderr, flush=True)
        raise SystemExit(RunInterrupted.exit_status) from None
    except user_errors() as err:
        if os.environ.get("REID_DEBUG"):
            raise
        message = _last_line(str(err))
        print(f"error: {message}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def _last_line(message: str) -> str:
    """One line of an error message: a loader worker's re-raised error carries the worker's traceback first."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].startswith("Caught ") and "Original Traceback" in message:
        return re.sub(r"^[\w.]+: ", "", lines[-1])  # drop the "module.ErrorClass: " prefix
    return " ".join(" ".join(lines).split())


def configure_wandb_env(output_dir: str | Path | None = None) -> None:
    """Makes W&B offline unless the user chose a mode, and never prompts or blocks on the network."""
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("WANDB_CONSOLE", "off")


class StoreConfigInCheckpoint(pl.Callback):
    """Saves the resolved run config (plain containers only) into every checkpoint.

    ``evaluate.py`` rebuilds the network from it, and plain containers keep the checkpoint
    loadable with ``torch.load(weights_only=True)``.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        checkpoint[CONFIG_KEY] = self.config


def _instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiates every entry of a ``callbacks`` or ``logger`` group that has a ``_target_``."""
    objects: list[Any] = []
    if not group:
        return objects
    for name, conf in group.items():
        if isinstance(conf, DictConfig) and "_target_" in conf:
            log.info("instantiating %s <%s>", name, conf._target_)
            objects.append(instantiate(conf))
    return objects


def eval_options(cfg: DictConfig, protocol: str) -> dict[str, Any]:
    """Keyword options of :class:`reid.metrics.ReIDMetric` from the ``eval`` group."""
    e = cfg.eval
    return {
        "metric": str(e.distance),
        "max_rank": int(e.max_rank),
        "protocol": protocol,
        "chunk_size": int(e.chunk_size),
        "num_repeats": int(e.cuhk03_repeats),
        "seed": int(e.cuhk03_seed),
        "exact": bool(e.cuhk03_exact),
    }


def build_datamodule(cfg: DictConfig) -> Any:
    """Instantiates the data module and reads the data set (generating the synthetic one if needed)."""
    datamodule = instantiate(cfg.data, _recursive_=False)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


# what a test set takes from the training set's config: the network's input and the loaders
TEST_SET_KEYS = ("whole_size", "part_size", "beta", "regions", "pose", "strips", "augment", "eval_batch_size",
                 "num_workers", "pin_memory", "on_bad_sample", "verify_images")


def build_test_sets(cfg: DictConfig) -> dict[str, Any]:
    """The data modules of ``data.test_sets`` (names of ``conf/data`` options), set up for evaluation only.

    Each is that option's config (its data set, options, keypoints) with the training set's input
    settings (:data:`TEST_SET_KEYS`: sizes, β, regions, pose thresholds, normalisation...), so the
    network sees what it was trained on.
    """
    from reid.cli import CONF_DIR, compose_configs
    from reid.schema import ConfigError

    names = list(cfg.data.get("test_sets") or [])
    if not names:
        return {}
    for name in names:
        if not (CONF_DIR / "data" / f"{name}.yaml").is_file() or name in ("default", "imagenet"):
            known = sorted(p.stem for p in (CONF_DIR / "data").glob("*.yaml") if p.stem not in ("default", "imagenet"))
            raise ConfigError([f"data.test_sets: unknown data set {name!r}; choose among {', '.join(known)}"])
    # each set's data config exactly as `data=<name>` composes it
    composed = compose_configs([[f"data={name}", "logger=none", "callbacks=none"] for name in names])
    modules = {}
    for name, option in zip(names, composed):
        data_cfg = OmegaConf.create(OmegaConf.to_container(option.data, resolve=True))
        for key in TEST_SET_KEYS:
            if key in cfg.data:
                data_cfg[key] = OmegaConf.to_container(cfg.data[key], resolve=True) if isinstance(
                    cfg.data[key], (DictConfig, ListConfig)) else cfg.data[key]
        data_cfg.root = str(cfg.data.root)
        data_cfg.sampler_seed = None  # evaluation only: no training order
        data_cfg.test_sets = []
        datamodule = instantiate(data_cfg, _recursive_=False)
        datamodule.prepare_data()
        datamodule.setup("validate")
        modules[name] = datamodule
    return modules


def build_model(cfg: DictConfig, num_classes: int, protocol: str) -> Any:
    """Instantiates the LightningModule for ``num_classes`` identities."""
    # _convert_="all": plain containers in the hyper-parameters keep checkpoints weights_only-loadable
    return instantiate(cfg.model, num_classes=num_classes, eval_options=eval_options(cfg, protocol), _convert_="all")


def metrics_from(results: dict[str, Any]) -> dict[str, float]:
    """The ``val/...`` values of a validate() result as plain floats keyed ``rank1``, ``mAP``..."""
    out: dict[str, float] = {}
    for key in METRIC_KEYS:
        value = results.get(f"val/{key}")
        if value is not None:
            out[key] = float(value)
    return out


def write_metrics(metrics: dict[str, Any], output_dir: str | Path) -> Path:
    """Writes ``metrics.json`` (fractions) into ``output_dir``, atomically: the old file survives a failed write."""
    from reid.files import atomic_write_json

    path = atomic_write_json(Path(output_dir) / "metrics.json", metrics, indent=2, sort_keys=True)
    log.info("wrote %s", path)
    return path


def format_table(metrics: dict[str, float]) -> str:
    """A one-row Markdown table of R1/R5/R10/R20/mAP in percent."""
    cols = [("R1", "rank1"), ("R5", "rank5"), ("R10", "rank10"), ("R20", "rank20"), ("mAP", "mAP"), ("mINP", "mINP")]
    cols += [("Top-1", "top1"), ("Top-5", "top5")]
    cols = [(label, key) for label, key in cols if key in metrics]
    header = "| " + " | ".join(label for label, _ in cols) + " |"
    sep = "|" + "|".join("---:" for _ in cols) + "|"
    row = "| " + " | ".join(f"{100 * metrics[key]:.2f}" for _, key in cols) + " |"
    return "\n".join([header, sep, row])


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


@contextmanager
def _terminated_as_error(trainer: pl.Trainer, output_dir: Path, stage: str, saver: InterruptCheckpoint) -> Iterator[None]:
    """Turns Lightning's SIGTERM exit (a ``SystemExit`` with status 0) into :class:`RunInterrupted`, logged."""
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    from reid.lit.resume import find_resume_checkpoint

    try:
        yield
    except SIGTERMException:
        try:
            checkpoint = saver.saved or find_resume_checkpoint(output_dir)
        except FileNotFoundError:
            checkpoint = None
        where = f"at epoch {trainer.current_epoch}, step {trainer.global_step}"
        resume = (
            f"the last checkpoint is {checkpoint}: resume with `python train.py <same overrides> "
            f"hydra.run.dir={output_dir} ckpt_path=last`" if checkpoint else "no checkpoint was written yet"
        )
        message = f"terminated by SIGTERM during {stage} {where}; {resume}"
        log.error(message)
        raise RunInterrupted(message) from None


def _limit_validation(cfg: DictConfig, datamodule: Any) -> dict[str, Any] | None:
    """Applies the trainer's validation limit as a consistent query/gallery subset (see ``limit_eval``).

    ``trainer.limit_val_batches`` (an int: batches, a float: a fraction), ``fast_dev_run``
    (its batches; at least one whole identity) and ``overfit_batches`` (its batches; a
    fraction is refused) all cut the validation loader, which serves every query before the
    gallery. The data module serves a subset of whole identities instead; with
    ``limit_val_batches`` the trainer must then be built with ``limit_val_batches=1.0`` (the
    run's stored config keeps the user's value). 0 (no validation) stays Lightning's.
    """
    from reid.schema import ConfigError

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
            raise ConfigError([
                f"trainer.overfit_batches={overfit}: give a number of batches (e.g. 3); a fraction would cut "
                "validation between the queries and their gallery"
            ])
        subset = datamodule.limit_eval(int(overfit), at_least_one=True, setting="trainer.overfit_batches")
    else:
        limit = trainer_cfg.get("limit_val_batches", 1.0)
        if limit is None or limit == 0 or (isinstance(limit, float) and limit >= 1.0):
            return None
        subset = datamodule.limit_eval(limit)
    return subset


def train(cfg: DictConfig) -> dict[str, float]:
    """Fits the model of ``cfg`` on its data, validates the final weights, writes metrics.json.

    In a Hydra multirun, DDP processes re-run this job only (:func:`reid.launch.prepare_ddp_children`)
    and no distributed state outlives the job (:func:`reid.launch.isolated_job`).
    """
    from reid.launch import isolated_job

    with isolated_job():
        return _fit_and_validate(cfg)


def _fit_and_validate(cfg: DictConfig) -> dict[str, float]:
    from reid.launch import multirun_group, prepare_ddp_children, rank_summary
    from reid.lit.resume import (
        CHECKPOINT_DIR,
        AtomicCheckpointIO,
        RandomStateCheckpoint,
        add_wandb_resume,
        resolve_ckpt_path,
    )
    from reid.schema import validate_config

    validate_config(cfg)
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
    resolved = OmegaConf.to_container(cfg, resolve=True)
    callbacks = _instantiate_group(cfg.get("callbacks"))
    interrupt_checkpoint = InterruptCheckpoint(output_dir / CHECKPOINT_DIR / "last.ckpt")
    callbacks += [StoreConfigInCheckpoint(resolved), RandomStateCheckpoint(), interrupt_checkpoint]
    cross_dataset = None
    if test_sets:
        from reid.lit.cross_dataset import CrossDatasetValidation

        cross_dataset = CrossDatasetValidation(test_sets, OmegaConf.to_container(cfg.eval, resolve=True))
        callbacks.append(cross_dataset)
    if not cfg.trainer.get("enable_progress_bar", True):
        # `trainer.enable_progress_bar=false` alone should be enough to silence the bar
        callbacks = [c for c in callbacks if not isinstance(c, pl.callbacks.ProgressBar)]
    loggers = _instantiate_group(cfg.get("logger"))
    if not loggers:
        # Lightning refuses a LearningRateMonitor without a logger; logger=none should just work
        callbacks = [c for c in callbacks if not isinstance(c, pl.callbacks.LearningRateMonitor)]
    trainer: pl.Trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=[AtomicCheckpointIO()],
        # the data module serves the subset whole
        **({"limit_val_batches": 1.0} if eval_subset and eval_subset["setting"] == "trainer.limit_val_batches" else {}),
    )
    for logger in loggers:
        logger.log_hyperparams(resolved)

    with _terminated_as_error(trainer, output_dir, "training", interrupt_checkpoint):
        trainer.fit(model=model, datamodule=datamodule, ckpt_path=ckpt_path)

    metrics: dict[str, Any] = {}
    if cfg.get("final_validation", True) and trainer.limit_val_batches == 0:
        log.info("trainer.limit_val_batches=0: no validation, so no final metrics and no metrics.json")
    elif cfg.get("final_validation", True):
        with _terminated_as_error(trainer, output_dir, "the final validation", interrupt_checkpoint):
            results = trainer.validate(model=model, datamodule=datamodule, verbose=False)
        metrics = metrics_from(results[0] if results else {})
        health = getattr(model, "last_attention_health", None)
        if health:
            metrics["attention"] = health
        if eval_subset:
            metrics["eval_subset"] = eval_subset
        if cross_dataset is not None and cross_dataset.last_results:
            metrics["test_sets"] = cross_dataset.last_results
        if trainer.is_global_zero:
            write_metrics(metrics, output_dir)
            log.info("final validation on %s:\n%s", cfg.data.name, format_table(metrics))
    for logger in loggers:
        if hasattr(logger, "experiment") and hasattr(logger.experiment, "finish"):
            logger.experiment.finish()
    return metrics


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
    "whole_size", "part_size", "beta", "augment.normalize", "augment.mean", "augment.scale",
    "pose.min_conf", "pose.min_joints", "pose.max_outside", "strips.layout",
)


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
            log.warning("evaluating with data.%s=%s as given; the checkpoint was trained with %s", key, current, shown_trained)
            continue
        with open_dict(cfg):
            OmegaConf.update(cfg.data, key, trained, merge=False)
        log.info("data.%s=%s from the checkpoint (this config had %s)", key, shown_trained, current)
    return notices


def _model_from_checkpoint(cfg: DictConfig, checkpoint: dict[str, Any], protocol: str) -> Any:
    num_classes = int(checkpoint["hyper_parameters"]["num_classes"])
    model = build_model(cfg, num_classes, protocol)
    model.load_state_dict(checkpoint["state_dict"], strict=True)
    return model


def knockout_scores(module: Any, datamodule: Any, cfg: DictConfig) -> dict[str, dict[str, float]]:
    """The global + part feature's metrics with the attention masks flattened (``reid.models.attention.attention_knockout``)."""
    from reid.evaluation import score_datamodule
    from reid.models.attention import KNOCKOUTS, attention_knockout

    options = OmegaConf.to_container(cfg.eval, resolve=True)
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
    from reid.eval_report import write_evaluation_outputs
    from reid.evaluation import (
        FeatureSet,
        extract_features,
        plain_metrics,
        rerank_scores,
        results_table,
        score_features,
    )
    from reid.metrics.attention_health import AttentionHealth, health_summary
    from reid.schema import validate_config

    validate_config(cfg)
    e = cfg.eval
    attention: dict[str, Any] = {}
    knockout: dict[str, dict[str, float]] = {}
    input_notices: list[str] = []
    output_dir = Path(cfg.paths.output_dir)
    module = datamodule = None
    if cfg.get("features_path"):
        features = FeatureSet.load(cfg.features_path)
        log.info("scoring the saved features %s (no model)", cfg.features_path)
    else:
        if not cfg.get("ckpt_path"):
            raise FileNotFoundError("nothing to evaluate: pass ckpt_path=<run dir>/checkpoints/last.ckpt "
                                    "or features_path=<features.pt>")
        checkpoint = load_checkpoint(cfg.ckpt_path)
        _use_stored_model_config(cfg, checkpoint)  # before the data: data.regions follows model.regions
        input_notices = use_stored_input_config(cfg, checkpoint)
        datamodule = build_datamodule(cfg)
        module = _model_from_checkpoint(cfg, checkpoint, datamodule.dataset.protocol)
        eval_set = datamodule.eval_set
        health = AttentionHealth(keep_mu_values=False)
        features = extract_features(
            module, datamodule.val_dataloader(), paths=[r.image_path for r in eval_set.records],
            boxes=eval_set.boxes, protocol=datamodule.dataset.protocol, flip=bool(e.flip), device=_eval_device(cfg),
            rows=None if e.branches else ["all"], attention_health=health,
        )
        attention = health.compute()
        if e.attention_knockout and getattr(module.net, "intra_attention", False):
            knockout = knockout_scores(module, datamodule, cfg)
        features.meta.update({"ckpt_path": str(cfg.ckpt_path), "data": str(cfg.data.name)})
        if e.save_features:
            features.save(output_dir / "features.pt")

    options = {"distance": str(e.distance), "max_rank": int(e.max_rank), "chunk_size": int(e.chunk_size)}
    protocol_kw = {"num_repeats": int(e.cuhk03_repeats), "seed": int(e.cuhk03_seed), "exact": bool(e.cuhk03_exact)}
    rows = list(features.features) if e.branches else ["all"]
    results = score_features(features, rows=rows, **options, **protocol_kw)
    if e.rerank:
        results["all_rerank"] = rerank_scores(
            features, distance=options["distance"], k1=int(e.rerank_k1), k2=int(e.rerank_k2),
            lambda_value=float(e.rerank_lambda), max_images=int(e.rerank_max_images), max_rank=options["max_rank"],
            **protocol_kw,
        )
    metrics: dict[str, Any] = dict(plain_metrics(results["all"]))
    metrics["branches"] = {row: plain_metrics(r) for row, r in results.items() if row != "all_rerank"}
    if "all_rerank" in results:
        metrics["rerank"] = plain_metrics(results["all_rerank"])
    if input_notices:
        metrics["input_differs_from_training"] = input_notices
    if module is not None and cfg.data.get("test_sets"):
        from reid.lit.cross_dataset import score_test_sets

        metrics["test_sets"] = score_test_sets(module, build_test_sets(cfg), OmegaConf.to_container(e, resolve=True))
    if knockout:
        attention["knockout"] = knockout
    if attention:
        metrics["attention"] = attention
        log.info("attention health on the query images: %s", health_summary(attention))
    table = results_table({("Global + part, re-ranked" if k == "all_rerank" else k): v for k, v in results.items()})
    write_metrics(metrics, output_dir)
    write_evaluation_outputs(
        cfg, features, results, table, output_dir, module=module, attention_health=attention,
        eval_set=datamodule.eval_set if datamodule is not None else None,
    )
    print(table)
    return metrics
