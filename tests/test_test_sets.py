"""Cross-dataset test sets (data.test_sets): scored at every validation, logged per set, in metrics.json, evaluated."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from fixtures import write_market_tree
from omegaconf import open_dict

from reid import tasks as runner
from reid.errors import ConfigError


def _with_market(cfg, root: Path):
    write_market_tree(root, keypoints=True)  # no keypoint files: the regions fall back, counted
    with open_dict(cfg):
        cfg.paths.data_dir = str(root)
    return cfg


def test_test_sets_are_scored_at_every_validation_and_written_per_set(make_cfg, tmp_path):
    cfg = _with_market(
        make_cfg(
            "data.test_sets=[market]",
            "trainer.max_epochs=2",
            "trainer.check_val_every_n_epoch=1",
            "logger=csv",
            "callbacks=model_checkpoint",
        ),
        tmp_path / "data",
    )
    metrics = runner.train(cfg)
    market = metrics["test_sets"]["market"]
    assert set(market) >= {"rank1", "mAP", "mINP"} and all(0.0 <= v <= 1.0 for v in market.values())
    assert 0.0 <= metrics["mAP"] <= 1.0  # the training set's own figures stay the top level
    with open(next(Path(cfg.paths.output_dir).glob("csv/**/metrics.csv"))) as handle:
        rows = list(csv.DictReader(handle))
    logged = [r["val/market/mAP"] for r in rows if r.get("val/market/mAP")]
    assert len(logged) == 3  # two validations while training, one final
    assert float(logged[-1]) == pytest.approx(market["mAP"], abs=1e-6)

    # evaluate.py scores the same list
    checkpoint = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    from conftest import TINY_OVERRIDES

    overrides = [o for o in TINY_OVERRIDES if not o.startswith(("callbacks=", "model.", "trainer.enable_model"))]
    eval_cfg = _with_market(
        make_cfg(
            f"ckpt_path={checkpoint}",
            "data.test_sets=[market]",
            "eval.pictures.enabled=false",
            *overrides,
            config_name="evaluate",
            tiny=False,
        ),
        tmp_path / "data",
    )
    scored = runner.evaluate(eval_cfg)
    assert scored["test_sets"]["market"]["mAP"] == pytest.approx(market["mAP"], abs=1e-6)


def test_an_unknown_test_set_is_one_line_naming_the_choices(make_cfg):
    with pytest.raises(ConfigError, match=r"data.test_sets: unknown data set 'dukee'; choose among .*duke"):
        runner.build_test_sets(make_cfg("data.test_sets=[dukee]"))


def test_the_occluded_synthetic_condition_has_the_training_sets_people_and_occluded_queries(make_cfg):
    import numpy as np

    from reid.data.truth import HIDDEN, read_truth, truth_path

    cfg = make_cfg("data.test_sets=[synthetic_occluded]")
    occluded = runner.build_test_sets(cfg)["synthetic_occluded"]
    plain = runner.build_datamodule(cfg)
    # the training set's (tiny) generator options, with only the condition's two set over them
    assert occluded.options == {**cfg.data.options, "query_occlusion_prob": 1.0, "gallery_occlusion_prob": 0.0}
    assert [r.pid for r in occluded.dataset.query] == [r.pid for r in plain.dataset.query]

    def hidden(records) -> list[bool]:
        return [bool((read_truth(truth_path(r.image_path)) == HIDDEN).any()) for r in records]

    assert not any(hidden(occluded.dataset.gallery))
    assert np.mean(hidden(occluded.dataset.query)) > 0.6  # an occluder beside the person hides nothing
    assert np.mean(hidden(occluded.dataset.query)) > np.mean(hidden(plain.dataset.query))
