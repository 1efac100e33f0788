"""A callback that turns each validation into per-branch results and pictures, on disk, on W&B and TensorBoard."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger

from reid.evaluation import PART_NAMES, ROW_LABELS, FeatureSet, plain_metrics, score_features
from reid.evaluation.report import evaluation_pictures, save_pictures
from reid.metrics import ReIDMetric
from reid.names import RANK_METRICS

log = logging.getLogger(__name__)


class ValidationDashboard(pl.Callback):
    """After every validation: Table 7 rows, ranked lists, attention maps, CMC curve, mu histogram.

    Per-branch rows are columns of the validation feature (``net.feature_slices``), so they come
    without a second pass over the data; for inter-attention the part rows are the weighted
    ``(mu_i + 1) E_i`` (``evaluate.py`` scores the plain E_i). Scalars go to every logger as
    ``val_branch/<row>/<metric>``; on W&B the rows also form a ``wandb.Table`` and the pictures
    are logged as images. Pictures are written to ``<output_dir>/pictures/epoch<NNN>/`` whatever
    the logger, so ``logger=csv`` and ``logger=none`` runs have them too. Rank 0 only.

    Args:
        output_dir: where the ``pictures`` folder goes (default: the trainer's ``default_root_dir``).
        per_branch: score each branch alone.
        pictures: draw pictures.
        every_n_validations: draw pictures at every n-th validation (branch scores: every time).
        num_queries, query_rows, topk, num_attention, seed: as in the ``eval.pictures`` config.
    """

    def __init__(
        self,
        output_dir: str | None = None,
        per_branch: bool = True,
        pictures: bool = True,
        every_n_validations: int = 1,
        num_queries: int = 8,
        query_rows: Sequence[int] | None = None,
        topk: int = 10,
        num_attention: int = 4,
        seed: int = 0,
    ) -> None:
        self.output_dir = output_dir
        self.per_branch = per_branch
        self.pictures = pictures
        self.every_n_validations = max(1, int(every_n_validations))
        self.picture_options = {
            "num_queries": num_queries,
            "query_rows": list(query_rows) if query_rows is not None else None,
            "topk": topk,
            "num_attention": num_attention,
            "seed": seed,
        }
        self.validations = 0
        self.last_results: dict[str, dict[str, float]] = {}
        self.last_pictures: dict[str, Path] = {}

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        gathered = getattr(pl_module, "last_val_gathered", None)
        datamodule = getattr(trainer, "datamodule", None)
        eval_set = getattr(datamodule, "eval_set", None)
        if not gathered or eval_set is None or len(eval_set) != len(gathered["pids"]):
            return
        self.validations += 1
        features = self._feature_set(pl_module, gathered, eval_set)
        metric = cast("ReIDMetric", pl_module.val_metric)  # the ReIDModule's, as last_val_gathered says
        rows = [r for r in features.features if r != "all"] if self.per_branch else []
        results: dict[str, dict[str, Any]] = score_features(
            features,
            rows=rows,
            distance=metric.distance,
            max_rank=metric.max_rank,
            chunk_size=metric.chunk_size,
            **metric.protocol_kw,
        )
        results["all"] = {**getattr(pl_module, "last_val_results", {}), "cmc": gathered["cmc"].numpy()}
        self.last_results = {row: plain_metrics(r) for row, r in results.items()}
        self._log_scalars(trainer)
        self._log_mu_histograms(trainer, gathered.get("part_weights"))

        if self.pictures and (self.validations - 1) % self.every_n_validations == 0:
            root = Path(self.output_dir or trainer.default_root_dir)
            pictures = evaluation_pictures(
                features,
                results,
                self.picture_options,
                module=pl_module,
                eval_set=eval_set,
                distance=metric.distance,
                max_rank=metric.max_rank,
                attention_health=getattr(pl_module, "last_attention_health", None),
            )
            self.last_pictures = save_pictures(pictures, root / "pictures" / f"epoch{trainer.current_epoch:03d}")
            self._log_images(trainer)

    @staticmethod
    def _feature_set(pl_module: pl.LightningModule, gathered: dict[str, torch.Tensor], eval_set: Any) -> FeatureSet:
        feature = gathered["features"].float()
        slices = getattr(getattr(pl_module, "net", None), "feature_slices", {"all": slice(None)})
        order = [r for r in ROW_LABELS if r in slices]
        return FeatureSet(
            features={row: feature[:, slices[row]] for row in order},
            pids=gathered["pids"],
            camids=gathered["camids"],
            is_query=gathered["is_query"],
            paths=[r.image_path for r in eval_set.records],
            protocol=cast("ReIDMetric", pl_module.val_metric).protocol,
            part_weights=gathered.get("part_weights"),
        )

    def _log_scalars(self, trainer: pl.Trainer) -> None:
        scalars = {
            f"val_branch/{row}/{key}": value
            for row, metrics in self.last_results.items()
            if row != "all"
            for key, value in metrics.items()
            if key in ("rank1", "mAP")
        }
        for logger in trainer.loggers:
            if scalars:
                logger.log_metrics(scalars, step=trainer.global_step)
            if isinstance(logger, WandbLogger):
                columns = ["features", *RANK_METRICS]
                data = [
                    [ROW_LABELS.get(row, row)] + [round(100 * metrics.get(k, float("nan")), 2) for k in columns[1:]]
                    for row, metrics in self.last_results.items()
                ]
                logger.log_table(key="val/branches", columns=columns, data=data, step=trainer.global_step)

    @staticmethod
    def _log_mu_histograms(trainer: pl.Trainer, mu: torch.Tensor | None) -> None:
        """Inter-attention's mu per part as W&B histograms (``val/attention/mu_hist/<part>``)."""
        if mu is None or len(mu) == 0:
            return
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                import wandb

                histograms = {
                    # wandb types sequence as a Sequence; it takes any array np.histogram does
                    f"val/attention/mu_hist/{part}": wandb.Histogram(
                        mu[:, index].numpy(),  # type: ignore[arg-type]
                        num_bins=32,
                    )
                    for index, part in enumerate(PART_NAMES)
                }
                # WandbLogger types the values as floats; wandb.log takes media such as histograms
                logger.log_metrics(histograms, step=trainer.global_step)  # type: ignore[arg-type]
            elif isinstance(logger, TensorBoardLogger):
                for index, part in enumerate(PART_NAMES):
                    logger.experiment.add_histogram(
                        f"val/attention/mu_hist/{part}", mu[:, index].numpy(), trainer.global_step, bins=32
                    )

    def _log_images(self, trainer: pl.Trainer) -> None:
        if not self.last_pictures:
            return
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                for name, path in self.last_pictures.items():
                    logger.log_image(key=f"val/{name}", images=[str(path)], step=trainer.global_step)
            elif isinstance(logger, TensorBoardLogger):
                from PIL import Image

                for name, path in self.last_pictures.items():
                    with Image.open(path) as picture:
                        pixels = np.asarray(picture.convert("RGB"))
                    logger.experiment.add_image(f"val/{name}", pixels, trainer.global_step, dataformats="HWC")
