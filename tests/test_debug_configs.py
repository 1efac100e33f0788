"""lightning-hydra-template conventions: debug configs, limited validation, TensorBoard and several loggers."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from conftest import flat_metrics

from reid import tasks as runner
from reid.tasks import train


def _metrics(cfg) -> dict:
    return json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())


# ---------------------------------------------------------------------------- limit_val_batches


@pytest.mark.parametrize("limit", ["2", "0.5"])
def test_limited_validation_scores_whole_identities_and_says_so(make_cfg, limit, caplog):
    # 4 images per batch: the limit keeps 8 (2 batches) or half of the query/gallery images
    cfg = make_cfg(
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        f"trainer.limit_val_batches={limit}",
        "trainer.check_val_every_n_epoch=1",
        "data.eval_batch_size=4",
    )
    with caplog.at_level("INFO"):
        metrics = train(cfg)
    written = _metrics(cfg)
    subset = written["eval_subset"]
    assert subset["setting"] == "trainer.limit_val_batches" and str(subset["limit"]) == limit
    assert 0 < subset["queries"] < subset["total_queries"] and 0 < subset["gallery"] < subset["total_gallery"]
    assert subset["queries"] + subset["gallery"] <= (
        8 if limit == "2" else (subset["total_queries"] + subset["total_gallery"]) // 2
    )
    assert 0.0 <= written["rank1"] <= 1.0 and flat_metrics(written) == pytest.approx(flat_metrics(metrics), nan_ok=True)
    assert any("validating on a subset (trainer.limit_val_batches=" in r.message for r in caplog.records)
    # the config the run stores (checkpoints, loggers) keeps what the user asked for
    assert str(cfg.trainer.limit_val_batches) == limit


def test_the_subset_holds_every_image_of_the_identities_it_keeps(make_cfg):
    datamodule = runner.build_datamodule(make_cfg("data.eval_batch_size=4"))
    full = datamodule.eval_set
    subset = datamodule.limit_eval(2)
    kept = datamodule.eval_set
    kept_pids = {r.pid for r, q in zip(kept.records, kept.is_query) if q}
    assert subset["identities"] == len(kept_pids) > 0
    for pid in kept_pids:  # every query and gallery image of a kept identity
        assert sum(r.pid == pid for r in kept.records) == sum(r.pid == pid for r in full.records)
    assert kept.is_query == sorted(kept.is_query, reverse=True)  # queries first, as the metric expects
    assert kept.indices == list(range(subset["queries"])) + list(range(subset["gallery"]))
    # the measuring fields follow their images (the attention's truth figures on a limited validation)
    assert full.truth is not None and full.part_confidence is not None
    assert kept.truth is not None and kept.part_confidence is not None
    row_of = {record.image_path: i for i, record in enumerate(full.records)}
    for j, record in enumerate(kept.records):
        assert kept.truth[j] == full.truth[row_of[record.image_path]]
        np.testing.assert_array_equal(kept.part_confidence[j], full.part_confidence[row_of[record.image_path]])


def test_a_validation_limit_too_small_to_score_is_one_error_line(make_cfg, capsys):
    cfg = make_cfg("trainer.max_epochs=1", "trainer.limit_val_batches=1", "data.eval_batch_size=1")
    with pytest.raises(SystemExit) as exit_info:
        runner.run_cli(train, cfg)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("error: trainer.limit_val_batches=1 keeps 1 of the ") and "raise it, or use 1.0" in err


def test_limit_val_batches_zero_skips_validation_and_writes_no_metrics(make_cfg):
    cfg = make_cfg("trainer.max_epochs=1", "trainer.limit_train_batches=1", "trainer.limit_val_batches=0")
    assert train(cfg) == {}
    assert not (Path(cfg.paths.output_dir) / "metrics.json").exists()


def test_a_lightning_setting_that_cannot_work_is_one_error_line(make_cfg, capsys):
    # 3 training batches: 1 % of them is none
    cfg = make_cfg("trainer.max_epochs=1", "trainer.limit_train_batches=0.01")
    with pytest.raises(SystemExit):
        runner.run_cli(train, cfg)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "limit_train_batches" in err


# ---------------------------------------------------------------------------- debug=...


def test_debug_configs_compose_as_lightning_hydra_template_users_expect(make_cfg):
    fdr = make_cfg("debug=fdr", tiny=False)
    assert fdr.task_name == "debug" and fdr.trainer.fast_dev_run is True
    assert fdr.callbacks is None and fdr.logger is None and fdr.data.num_workers == 0
    assert fdr.trainer.accelerator == "cpu" and fdr.trainer.detect_anomaly is True
    limit = make_cfg("debug=limit", tiny=False)
    assert 0 < limit.trainer.limit_train_batches < 1 and 0 < limit.trainer.limit_val_batches < 1
    assert make_cfg("debug=overfit", tiny=False).trainer.overfit_batches == 3
    assert make_cfg("debug=profiler", tiny=False).trainer.profiler == "simple"


@pytest.mark.parametrize(
    ("debug", "extra"),
    [
        ("fdr", ["data.eval_batch_size=8"]),  # one validation batch of 8: one whole identity at least
        # the others in CI: anomaly detection (every debug config) records a traceback per autograd node, which
        # under pytest's deep stacks makes their epochs cost 5-9 s; the fast loop keeps fdr, the limited
        # validation tests above and the overfit fraction test below
        pytest.param(
            "limit",
            ["trainer.limit_train_batches=2", "trainer.limit_val_batches=0.6", "trainer.max_epochs=2"],
            marks=pytest.mark.slow,
        ),
        pytest.param(
            "overfit",
            [
                "trainer.overfit_batches=1",
                "trainer.max_epochs=2",
                "trainer.check_val_every_n_epoch=1",
                "data.eval_batch_size=8",
            ],
            marks=pytest.mark.slow,
        ),
        pytest.param("profiler", ["trainer.limit_train_batches=2"], marks=pytest.mark.slow),
    ],
)
def test_each_debug_config_trains_and_scores_a_consistent_subset(make_cfg, debug, extra):
    # the tiny set is far smaller than the shipped fractions assume: the sizes are scaled down
    cfg = make_cfg(f"debug={debug}", *extra)
    metrics = train(cfg)
    assert 0.0 <= metrics["rank1"] <= 1.0 and 0.0 < metrics["mAP"] <= 1.0
    written = _metrics(cfg)
    if debug in ("fdr", "limit", "overfit"):
        assert written["eval_subset"]["queries"] < written["eval_subset"]["total_queries"]
        assert written["eval_subset"]["setting"].startswith("trainer.")


def test_overfit_batches_as_a_fraction_is_one_error_line(make_cfg, capsys):
    with pytest.raises(SystemExit):
        runner.run_cli(train, make_cfg("debug=overfit", "trainer.overfit_batches=0.5"))
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: trainer.overfit_batches=0.5: give a number of batches")


# ---------------------------------------------------------------------------- loggers


def _tensorboard_events(folder: Path) -> dict[str, set[str]]:
    """Tags in the TensorBoard event files under ``folder``, by kind (scalar, image, histogram)."""
    from tensorboardX.proto import event_pb2

    tags: dict[str, set[str]] = {"scalar": set(), "image": set(), "histogram": set()}
    for path in folder.rglob("events.out.tfevents.*"):
        data, position = path.read_bytes(), 0
        while position < len(data):  # TFRecord: length, its CRC, the event, its CRC
            (length,) = struct.unpack("<Q", data[position : position + 8])
            event = event_pb2.Event()
            event.ParseFromString(data[position + 12 : position + 12 + length])
            position += 12 + length + 4
            for value in event.summary.value:
                kind = value.WhichOneof("value")
                if kind == "simple_value":
                    tags["scalar"].add(value.tag)
                elif kind == "image":
                    tags["image"].add(value.tag)
                elif kind == "histo":
                    tags["histogram"].add(value.tag)
    return tags


def test_tensorboard_and_csv_together_get_scalars_pictures_and_mu_histograms(make_cfg):
    cfg = make_cfg(
        "model=intra_inter",
        "callbacks=dashboard",
        "logger=[csv,tensorboard]",
        "trainer.max_epochs=1",
        "trainer.check_val_every_n_epoch=1",
        "eval.pictures.num_queries=2",
        "eval.pictures.num_attention=2",
    )
    train(cfg)
    out = Path(cfg.paths.output_dir)
    tags = _tensorboard_events(out / "tensorboard")
    assert {"val/mAP", "val/rank1", "val/attention/mu/head/mean"} <= tags["scalar"]
    assert any(tag.startswith("train/loss") for tag in tags["scalar"])
    assert {"val/ranked_list", "val/attention", "val/cmc"} <= tags["image"]
    assert "val/attention/mu_hist/head" in tags["histogram"]
    assert next(out.glob("csv/**/metrics.csv")).stat().st_size > 0


def test_logger_many_composes_csv_tensorboard_and_wandb(make_cfg):
    assert set(make_cfg("logger=many").logger) == {"csv", "tensorboard", "wandb"}
