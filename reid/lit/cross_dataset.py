"""Cross-domain evaluation during training: other data sets' query/gallery scored at every validation.

The data sets are those of ``data.test_sets``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl

from reid.names import RANK_METRICS

log = logging.getLogger(__name__)

# the figures logged per test set (``val/<set>/<name>``) and written to metrics.json
LOGGED = RANK_METRICS


class CrossDatasetValidation(pl.Callback):
    """After each validation of the training set, scores the model on each test set's query and gallery.

    The training set's own metrics (``val/mAP``...) stay the model-selection metrics; the test
    sets are logged as ``val/<set>/rank1``, ``val/<set>/mAP``... to every logger, and the last
    figures are kept in :attr:`last_results` (``metrics.json`` gets them under ``test_sets``).
    The test sets are scored by the first process only (under DDP the others wait).

    Args:
        test_sets: name -> a set-up data module (``reid.lit.datamodule.ReIDDataModule``) of that set.
        eval_options: ``distance``, ``max_rank``, ``chunk_size`` and the CUHK03 options, as ``cfg.eval``.
    """

    def __init__(self, test_sets: Mapping[str, Any], eval_options: Mapping[str, Any]) -> None:
        self.test_sets = dict(test_sets)
        self.eval_options = dict(eval_options)
        self.last_results: dict[str, dict[str, float]] = {}

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not self.test_sets:
            return
        if trainer.is_global_zero:
            self.last_results = score_test_sets(pl_module, self.test_sets, self.eval_options)
            for name, metrics in self.last_results.items():
                for key in LOGGED:
                    if key in metrics:
                        pl_module.log(f"val/{name}/{key}", metrics[key], rank_zero_only=True)
        trainer.strategy.barrier("cross_dataset_validation")


def score_test_sets(
    module: Any, test_sets: Mapping[str, Any], eval_options: Mapping[str, Any]
) -> dict[str, dict[str, float]]:
    """Rank-1, mAP... of ``module``'s test feature on each test set (the ``all`` row of Table 7)."""
    from reid.evaluation import score_datamodule

    device = next(module.parameters()).device
    results = {}
    for name, datamodule in test_sets.items():
        results[name] = score_datamodule(module, datamodule, eval_options, device)
        log.info("test set %s: rank-1 %.4f, mAP %.4f", name, results[name]["rank1"], results[name]["mAP"])
    return results
