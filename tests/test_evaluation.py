"""evaluate.py's pieces: Table 7 branch features, flip averaging, saved features, re-ranking, report files."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import TINY_OVERRIDES
from omegaconf import OmegaConf, open_dict

from reid.evaluation import (
    FeatureSet,
    RerankTooLargeError,
    branch_features,
    extract_features,
    rerank_scores,
    score_features,
)
from reid.tasks import build_datamodule, build_model, evaluate


def _module_and_data(make_cfg, *overrides):
    cfg = make_cfg(*overrides)
    datamodule = build_datamodule(cfg)
    module = build_model(cfg, datamodule.num_classes, datamodule.dataset.protocol)
    return cfg, module.eval(), datamodule


def _batch(datamodule, n=6):
    samples = [datamodule.eval_set[i] for i in range(n)]
    return torch.stack([s["whole"] for s in samples]), torch.stack([s["parts"] for s in samples])


@pytest.mark.parametrize("model", ["baseline", "intra_inter"])
def test_branch_features_have_table7_rows_and_agree_with_the_test_feature(make_cfg, model):
    _, module, datamodule = _module_and_data(make_cfg, f"model={model}")
    net = module.net
    whole, parts = _batch(datamodule)
    with torch.no_grad():
        output = module(whole, parts)
    rows = branch_features(net, output)
    assert list(rows) == ["global", "head", "upper_body", "upper_leg", "lower_leg", "parts", "all"]
    assert rows["global"].shape == (6, net.global_dim)
    for name in ("head", "upper_body", "upper_leg", "lower_leg"):
        assert rows[name].shape == (6, net.part_dim)
    assert rows["parts"].shape == (6, 4 * net.part_dim)
    assert torch.equal(rows["all"], output.feature)
    # the global block of the test feature is E_g itself
    assert torch.allclose(rows["all"][:, : net.global_dim], rows["global"])
    plain_parts = torch.cat([rows[n] for n in ("head", "upper_body", "upper_leg", "lower_leg")], dim=1)
    if model == "baseline":  # concatenation: the part block is E_1..E_4 as they are
        assert torch.allclose(rows["parts"], plain_parts)
    else:  # inter-attention: each part (L2-normalised, inter_norm=l2) is weighted by (mu_i + 1) (Eq. 9)
        assert net.fusion.norm == "l2"
        unit = torch.nn.functional.normalize(plain_parts.view(6, 4, net.part_dim), dim=-1) * (net.part_dim / 2) ** 0.5
        weights = (output.part_weights + 1).unsqueeze(-1)
        assert torch.allclose(rows["parts"], (unit * weights).flatten(1), atol=1e-5)
        assert not torch.allclose(rows["parts"], plain_parts)


def test_flip_averages_the_features_of_the_mirrored_crops(make_cfg):
    _, module, datamodule = _module_and_data(make_cfg, "model=intra_inter")
    records = datamodule.eval_set.records
    paths = [r.image_path for r in records]
    plain = extract_features(module, datamodule.val_dataloader(), paths=paths)
    flipped = extract_features(module, datamodule.val_dataloader(), paths=paths, flip=True)
    whole, parts = _batch(datamodule, n=4)
    with torch.no_grad():
        mirrored = branch_features(module.net, module(whole.flip(-1), parts.flip(-1)))
    for row in ("global", "head", "all"):
        expected = (plain.features[row][:4] + mirrored[row]) / 2
        assert torch.allclose(flipped.features[row][:4], expected, rtol=1e-4, atol=1e-4), row
    assert flipped.part_weights is not None and flipped.part_weights.shape == (len(paths), 4)
    assert flipped.meta["flip"] is True


def _toy_feature_set() -> FeatureSet:
    torch.manual_seed(0)
    pids = torch.tensor([1, 2, 3, 1, 1, 2, 2, 3, 3, 4])
    camids = torch.tensor([0, 0, 0, 1, 1, 1, 1, 1, 1, 1])
    is_query = torch.tensor([True] * 3 + [False] * 7)
    centres = torch.randn(5, 8)
    feats = centres[pids] + 0.3 * torch.randn(10, 8)
    return FeatureSet(
        features={"global": feats[:, :4], "all": feats},
        pids=pids,
        camids=camids,
        is_query=is_query,
        paths=[f"img{i}.jpg" for i in range(10)],
        part_weights=torch.rand(10, 4),
        meta={"flip": False},
    )


def test_saved_features_rescore_to_the_same_metrics(tmp_path):
    features = _toy_feature_set()
    path = features.save(tmp_path / "features.pt")
    loaded = FeatureSet.load(path)
    assert loaded.paths == features.paths and torch.equal(loaded.is_query, features.is_query)
    first, again = score_features(features), score_features(loaded)
    for row in ("global", "all"):
        for key in ("rank1", "rank5", "mAP", "mINP"):
            assert again[row][key] == first[row][key]
    # it is a plain tensor file: safe loading reads it
    assert torch.load(path, weights_only=True)["format"] == "reid-features-v1"


def test_rerank_with_lambda_one_keeps_the_plain_ranking_and_large_sets_are_refused():
    features = _toy_feature_set()
    plain = score_features(features, rows=["all"])["all"]
    # lambda = 1 keeps the original distance only (Zhong et al., Eq. 13)
    same = rerank_scores(features, k1=3, k2=1, lambda_value=1.0)
    assert same["mAP"] == pytest.approx(plain["mAP"]) and same["rank1"] == plain["rank1"]
    reranked = rerank_scores(features, k1=3, k2=2, lambda_value=0.3)
    assert 0.0 <= reranked["mAP"] <= 1.0 and len(reranked["cmc"]) == 50
    with pytest.raises(RerankTooLargeError, match="eval.rerank_max_images"):
        rerank_scores(features, max_images=5)


# evaluate.yaml has no callbacks group, and the model comes from the checkpoint
EVAL_OVERRIDES = [o for o in TINY_OVERRIDES if not o.startswith(("callbacks=", "model.", "trainer.enable_model"))]


def _checkpoint(cfg, module, path):
    torch.save(
        {
            "state_dict": module.state_dict(),
            "hyper_parameters": {"num_classes": module.hparams.num_classes},
            "reid_config": OmegaConf.to_container(cfg, resolve=True),
        },
        path,
    )
    return path


def test_evaluate_writes_branches_rerank_report_and_rescoring_features(make_cfg, tmp_path):
    cfg, module, _ = _module_and_data(make_cfg, "model=intra_inter")
    ckpt = _checkpoint(cfg, module, tmp_path / "model.ckpt")
    eval_cfg = make_cfg(
        f"ckpt_path={ckpt}",
        "eval.save_features=true",
        "eval.rerank=true",
        "eval.rerank_k1=4",
        "eval.rerank_k2=2",
        "eval.flip=true",
        "eval.pictures.num_queries=3",
        *EVAL_OVERRIDES,
        config_name="evaluate",
        tiny=False,
    )
    metrics = evaluate(eval_cfg)
    out = tmp_path / "out"
    written = json.loads((out / "metrics.json").read_text())
    assert set(written["branches"]) == {"global", "head", "upper_body", "upper_leg", "lower_leg", "parts", "all"}
    assert written["rank1"] == written["branches"]["all"]["rank1"] == metrics["rank1"]
    assert set(written["rerank"]) >= {"rank1", "mAP"}
    report = (out / "report.md").read_text()
    assert "Global + part" in report and "Upper leg" in report and "re-ranked" in report
    for picture in ("ranked_list", "cmc", "part_weights", "attention"):
        assert (out / "pictures" / f"{picture}.png").stat().st_size > 1000, picture
        assert f"pictures/{picture}.png" in report

    rescore_cfg = make_cfg(
        f"features_path={out / 'features.pt'}",
        "eval.rerank=true",
        "eval.rerank_k1=4",
        "eval.rerank_k2=2",
        *EVAL_OVERRIDES,
        config_name="evaluate",
        tiny=False,
    )
    with open_dict(rescore_cfg):
        rescore_cfg.paths.output_dir = str(tmp_path / "rescored")
    again = evaluate(rescore_cfg)
    assert again["branches"] == written["branches"]
    assert again["rerank"] == written["rerank"]


def test_extraction_keeps_only_the_requested_rows(make_cfg):
    _, module, datamodule = _module_and_data(make_cfg, "model=baseline")
    paths = [r.image_path for r in datamodule.eval_set.records]
    only_all = extract_features(module, datamodule.val_dataloader(), paths=paths, rows=["all"])
    assert list(only_all.features) == ["all"]
    assert list(score_features(only_all)) == ["all"]


def test_scoring_options_are_built_once_from_the_eval_group(make_cfg):
    from reid.evaluation import ScoringOptions
    from reid.metrics import ReIDMetric
    from reid.tasks.common import eval_options

    cfg = make_cfg("eval.distance=cosine", "eval.max_rank=20", "eval.cuhk03_exact=true", "eval.flip=true")
    options = ScoringOptions.from_config(cfg.eval)
    assert (options.distance, options.max_rank, options.exact, options.flip) == ("cosine", 20, True, True)
    assert (
        eval_options(cfg, "cuhk03")
        == options.metric_kwargs("cuhk03")
        == {
            "metric": "cosine",
            "max_rank": 20,
            "protocol": "cuhk03",
            "chunk_size": 1024,
            "num_repeats": 10,
            "seed": 0,
            "exact": True,
        }
    )
    assert ReIDMetric(**options.metric_kwargs("market")).max_rank == 20
    assert ScoringOptions.from_config({}) == ScoringOptions()  # a mapping without the keys: the defaults


def test_a_condition_is_read_with_the_checkpoints_input_settings():
    from reid.tasks import condition_config

    trained = {"whole_size": [64, 32], "part_size": [16, 32], "beta": 0.3, "pose": {"visibility": "detected"}}
    checkpoint = {"reid_config": {"data": trained}}
    cfg = condition_config(checkpoint, ["data=synthetic_occluded", "data.whole_size=[32,16]"])
    assert cfg.data.num_workers == 0
    assert cfg.data.options.query_occlusion_prob == 1.0  # the condition's own images
    # the network's input is the checkpoint's, whatever the condition's config or the overrides say
    assert (list(cfg.data.whole_size), list(cfg.data.part_size), cfg.data.beta) == ([64, 32], [16, 32], 0.3)
    assert cfg.data.pose.visibility == "detected"
    kept = condition_config(checkpoint, ["data.pose.visibility=confidence"], keep=["pose.visibility"])
    assert kept.data.pose.visibility == "confidence" and list(kept.data.whole_size) == [64, 32]
