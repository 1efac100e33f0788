"""The validation dashboard: per-branch rows and pictures each validation, on disk and in an offline W&B run."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from reid.tasks import train


def _tiny_run(make_cfg, logger: str):
    cfg = make_cfg(
        "model=intra_inter",
        "callbacks=dashboard",
        f"logger={logger}",
        "trainer.max_epochs=1",
        "trainer.check_val_every_n_epoch=1",
        "eval.pictures.num_queries=2",
        "eval.pictures.num_attention=2",
    )
    train(cfg)
    return Path(cfg.paths.output_dir)


def test_pictures_and_branch_table_reach_an_offline_wandb_run(make_cfg, monkeypatch):
    import wandb
    from pytorch_lightning.loggers import WandbLogger

    logged: dict = {}
    original = WandbLogger.log_metrics

    def recording(self, metrics, step=None):
        logged.update(metrics)
        return original(self, metrics, step)

    monkeypatch.setattr(WandbLogger, "log_metrics", recording)
    out = _tiny_run(make_cfg, "wandb")
    # attention health: scalars per branch and block, mu per part, and mu histograms
    assert 0.0 <= logged["val/attention/global/b2/saturated"] <= 1.0
    assert 0.0 < logged["val/attention/mu/head/mean"] < 1.0
    assert isinstance(logged["val/attention/mu_hist/lower_leg"], wandb.Histogram)
    epoch_dir = out / "pictures" / "epoch000"
    for name in ("ranked_list", "attention", "cmc", "part_weights"):
        assert (epoch_dir / f"{name}.png").stat().st_size > 1000, name
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    media = runs[0] / "files" / "media"
    images = {p.name.split("_")[0] for p in (media / "images" / "val").glob("*.png")}
    assert {"ranked", "attention", "cmc", "part"} <= images
    tables = list((media / "table" / "val").glob("branches_*.table.json"))
    assert tables, "no wandb.Table of per-branch results"
    table = json.loads(tables[0].read_text())
    assert table["columns"][:3] == ["features", "rank1", "rank5"]
    assert [row[0] for row in table["data"]] == [
        "Global",
        "Head",
        "Upper body",
        "Upper leg",
        "Lower leg",
        "Part fusion",
        "Global + part",
    ]


def test_csv_logger_gets_branch_scalars_and_pictures_still_go_to_disk(make_cfg):
    out = _tiny_run(make_cfg, "csv")
    assert (out / "pictures" / "epoch000" / "ranked_list.png").is_file()
    with open(next(out.glob("csv/**/metrics.csv"))) as handle:
        columns = next(csv.reader(handle))
    assert {"val_branch/global/rank1", "val_branch/lower_leg/mAP", "val_branch/parts/rank1"} <= set(columns)
