"""Part weights that can follow visibility: the gate weight (below the global one's), the keypoint pseudo-label loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from reid.conf.validate import validate_config
from reid.errors import ConfigError
from reid.lit.module import ReIDModule
from reid.models import AttentionReIDNet
from reid.models.fusion import InterAttentionFusion


def _fusion(weight: str, bias: float) -> InterAttentionFusion:
    fusion = InterAttentionFusion(8, 4, num_classes=3, norm="none", weight=weight)
    nn.init.zeros_(fusion.part_weight.weight)
    nn.init.constant_(fusion.part_weight.bias, bias)
    return fusion.eval()


@pytest.mark.parametrize(("weight", "low", "high"), [("residual", 1.0, 2.0), ("gate", 0.0, 2.0)])
def test_a_parts_weight_spans_what_its_option_says(weight, low, high):
    global_feature, parts = torch.ones(2, 8), torch.ones(2, 16)
    for bias, expected in ((-30.0, low), (30.0, high), (0.0, (low + high) / 2 if weight == "gate" else 1.5)):
        fused = _fusion(weight, bias)(global_feature, parts).feature
        assert torch.allclose(fused[:, :8], global_feature)  # the global feature keeps weight 1
        assert torch.allclose(fused[:, 8:], torch.full((2, 16), expected), atol=1e-5), (weight, bias)


def test_an_unknown_weight_is_refused_by_the_network_and_the_config(make_cfg):
    with pytest.raises(ValueError, match="inter-attention weight must be one of"):
        InterAttentionFusion(8, 4, 3, weight="sometimes")
    with pytest.raises(ConfigError, match="model.net.inter_weight"):
        validate_config(make_cfg("model.net.inter_weight=sometimes"))
    net = AttentionReIDNet(num_classes=3, fusion="inter", inter_weight="gate", width=0.25)
    assert net.fusion.weight == "gate"


def _module(visibility_loss: float) -> ReIDModule:
    net = AttentionReIDNet(num_classes=4, fusion="inter", inter_weight="gate", width=0.25, global_dim=16, part_dim=8)
    return ReIDModule(
        net, num_classes=4, optimizer=lambda params: torch.optim.SGD(params, lr=0.5), visibility_loss=visibility_loss
    )


def test_the_visibility_loss_pulls_mu_towards_the_keypoints_confidence():
    torch.manual_seed(0)
    module = _module(visibility_loss=1.0).eval()  # eval: no dropout, BatchNorm fixed
    whole, parts = torch.randn(6, 3, 64, 32), torch.randn(6, 4, 3, 16, 32)
    pids = torch.arange(6) % 4
    target = torch.tensor([[0.9, 0.9, 0.1, 0.1]]).expand(6, 4).clone()
    target[0, 0] = float("nan")  # unknown: left out
    optimizer = torch.optim.SGD(module.net.fusion.part_weight.parameters(), lr=2.0)
    first = None
    for _ in range(60):
        losses = module.compute_losses(module(whole, parts), pids, target)
        first = first if first is not None else float(losses["loss_visibility"].detach())
        optimizer.zero_grad()
        losses["loss_visibility"].backward()
        optimizer.step()
    mu = module(whole, parts).part_weights.detach()
    assert float(losses["loss_visibility"].detach()) < first
    assert (mu[:, :2] > 0.7).all() and (mu[:, 2:] < 0.3).all()  # the hidden parts' weights fell


def test_without_the_loss_or_the_labels_nothing_is_added():
    module = _module(visibility_loss=0.0).eval()
    output = module(torch.randn(2, 3, 64, 32), torch.randn(2, 4, 3, 16, 32))
    pids = torch.tensor([0, 1])
    assert "loss_visibility" not in module.compute_losses(output, pids, torch.rand(2, 4))
    weighted = _module(visibility_loss=1.0).eval()
    assert "loss_visibility" not in weighted.compute_losses(output, pids, None)
    assert "loss_visibility" not in weighted.compute_losses(output, pids, torch.full((2, 4), float("nan")))


def test_training_batches_carry_the_pseudo_labels_and_never_the_truth(make_cfg):
    from reid.tasks import build_datamodule

    datamodule = build_datamodule(make_cfg())
    sample = datamodule.train_set[0]
    assert sample["part_confidence"].shape == (4,)
    assert not any(key.startswith("truth") for key in sample)


def test_a_standardised_logit_lets_mu_differ_between_images_where_unit_features_cannot():
    torch.manual_seed(0)
    # part features like a BN-ReLU branch's: non-negative, sharing most of their direction
    common = torch.rand(1, 4, 32) + 0.5
    parts = (common + 0.1 * torch.rand(64, 4, 32)).flatten(1)
    spread = {}
    for norm in ("l2", "l2_batch"):
        fusion = InterAttentionFusion(8, 32, num_classes=3, norm=norm, weight="gate").train()
        spread[norm] = float(fusion(torch.rand(64, 8), parts).part_weights.std(dim=0).mean())
    assert spread["l2"] < 0.01  # |w| ~ 1 over near-parallel unit vectors: mu is one value
    assert spread["l2_batch"] > 0.1  # the logit's spread is the BatchNorm's scale (1 at the start)
    with pytest.raises(ValueError, match="inter-attention norm must be one of"):
        InterAttentionFusion(8, 4, 3, norm="batch")


def test_mu_from_the_visibility_map_is_each_parts_mean_score_and_learns_what_was_hidden():
    from reid.metrics.truth import spearman

    torch.manual_seed(0)
    net = AttentionReIDNet(num_classes=4, fusion="inter", inter_source="map", inter_weight="gate", width=0.25)
    assert net.fusion.part_weight is None  # no unused head (DDP)
    module = ReIDModule(net, num_classes=4, optimizer=None, visibility_loss=1.0, visibility_target="erasing")
    whole, parts = torch.rand(32, 3, 64, 32) - 0.5, torch.rand(32, 4, 3, 16, 32) - 0.5
    shown = torch.ones(32, 4)
    for b in range(32):  # a solid block over the top rows of each part: the share hidden is known
        for i in range(4):
            rows = int(torch.randint(0, 17, ()))
            parts[b, i, :, :rows] = torch.rand(3, 1, 1) - 0.5
            shown[b, i] = 1 - rows / 16
    output = module(whole, parts)
    assert output.part_weights.shape == (32, 4) and bool((output.part_weights - 0.5).abs().max() < 0.05)
    # only the visibility loss trains the map: the identity losses leave it alone
    module.compute_losses(output, torch.arange(32) % 4)["loss"].backward()
    assert net.part_branch.visibility_map.weight.grad is None
    optimizer = torch.optim.Adam(module.parameters(), lr=3e-3)
    for _ in range(60):
        losses = module.compute_losses(module(whole, parts), torch.arange(32) % 4, shown)
        optimizer.zero_grad()
        losses["loss_visibility"].backward()
        optimizer.step()
    mu = module.eval()(whole, parts).part_weights.detach()
    assert min(spearman(mu[:, i], shown[:, i]) for i in range(4)) > 0.8
    with pytest.raises(ValueError, match="inter_source must be one of"):
        AttentionReIDNet(num_classes=4, fusion="inter", inter_source="pixels")


def _module_with_target(target: str) -> ReIDModule:
    net = AttentionReIDNet(num_classes=4, fusion="inter", inter_weight="gate", width=0.25, global_dim=16, part_dim=8)
    return ReIDModule(net, num_classes=4, optimizer=None, visibility_loss=1.0, visibility_target=target)


def test_the_erasing_label_is_what_the_erasing_left_of_each_part():
    keypoints = torch.tensor([[0.8, float("nan"), 0.5, 0.0]])
    unerased = torch.tensor([[1.0, 0.25, 0.5, 1.0]])
    batch = {"part_confidence": keypoints, "part_unerased": unerased}
    assert _module_with_target("keypoints").visibility_label(batch) is keypoints
    assert torch.equal(_module_with_target("erasing").visibility_label(batch), unerased)
    # both: the product, an unknown keypoint label counting as visible
    assert torch.allclose(_module_with_target("both").visibility_label(batch), torch.tensor([[0.8, 0.25, 0.25, 0.0]]))
    with pytest.raises(ValueError, match="data.augment.random_erasing"):
        _module_with_target("erasing").visibility_label({"part_confidence": keypoints})
    with pytest.raises(ValueError, match="visibility_target must be one of"):
        _module_with_target("truth")


def test_an_erasing_label_without_erasing_is_refused_in_one_line(make_cfg):
    from reid.tasks.train import check_visibility_label

    with pytest.raises(ConfigError, match="data.augment.random_erasing=0"):
        check_visibility_label(make_cfg("model.visibility_loss=1", "model.visibility_target=erasing"))
    check_visibility_label(
        make_cfg("model.visibility_loss=1", "model.visibility_target=erasing", "data.augment.random_erasing=0.5")
    )
    check_visibility_label(make_cfg("model.visibility_target=erasing"))  # no loss: no label needed
    with pytest.raises(ConfigError, match="model.net.inter_source=map learns"):
        check_visibility_label(make_cfg("model.net.inter_source=map"))
    check_visibility_label(make_cfg("model.net.inter_source=map", "model.visibility_loss=1"))
    dense = ["model.visibility_loss=1", "model.visibility_target=erasing_map", "data.augment.random_erasing=0.5"]
    with pytest.raises(ConfigError, match="set model.net.inter_source=map"):
        check_visibility_label(make_cfg(*dense))
    check_visibility_label(make_cfg(*dense, "model.net.inter_source=map"))
    with pytest.raises(ConfigError, match="model.visibility_target"):
        validate_config(make_cfg("model.visibility_target=truth"))


def test_training_batches_with_erasing_carry_what_it_left(make_cfg):
    from reid.tasks import build_datamodule

    datamodule = build_datamodule(make_cfg("data.augment.random_erasing=1.0", "data.augment.erasing_fill=random"))
    shares = torch.stack([datamodule.train_set[i]["part_unerased"] for i in range(8)])
    assert shares.shape == (8, 4) and bool((shares <= 1).all()) and bool((shares >= 0).all())
    assert bool((shares < 1).any())  # every sample erased: some part lost pixels
    assert "part_unerased" not in datamodule.eval_set[0]  # evaluation never erases


# ---------------------------------------------------------------------------- visibility-aware matching


def test_visibility_distance_by_hand():
    from reid.metrics.visibility import visibility_distance

    e = torch.eye(4)
    global_q, global_g = e[:1], e[:2]  # the query's global feature equals gallery 0's, is orthogonal to gallery 1's
    parts_q = e[[0, 1, 2, 3]].unsqueeze(0)  # (1, 4, 4)
    parts_g = torch.stack([e[[1, 1, 2, 3]], e[[0, 1, 2, 3]]])  # gallery 0 differs in part 0 only; gallery 1 in none
    visible = torch.ones(1, 4)
    all_seen = visibility_distance(global_q, global_g, parts_q, parts_g, visible, torch.ones(2, 4))
    # squared distances of unit vectors: 2 when orthogonal; (d_g + sum w d) / (1 + sum w)
    assert all_seen[0].tolist() == pytest.approx([(0 + 2) / 5, (2 + 0) / 5])
    hidden = torch.ones(2, 4)
    hidden[0, 0] = 0.0  # gallery 0's part 0 is hidden: its distance no longer counts
    assert visibility_distance(global_q, global_g, parts_q, parts_g, visible, hidden)[0].tolist() == pytest.approx(
        [0.0, 2 / 5]
    )
    nothing = visibility_distance(global_q, global_g, parts_q, parts_g, torch.zeros(1, 4), torch.ones(2, 4))
    assert nothing[0].tolist() == pytest.approx([0.0, 2.0])  # no part seen by both: the global feature alone
    nan = torch.full((1, 4), float("nan"))
    assert torch.equal(visibility_distance(global_q, global_g, parts_q, parts_g, nan, torch.ones(2, 4)), nothing)


def test_evaluate_scores_visibility_matching_from_keypoints_and_mu(trained, make_cfg):
    from conftest import TINY_OVERRIDES

    import reid.tasks as runner

    overrides = [o for o in TINY_OVERRIDES if not o.startswith(("callbacks=", "model.", "trainer.enable_model"))]
    for source in ("keypoints", "mu"):
        cfg = make_cfg(
            f"ckpt_path={trained[0]}",
            f"eval.visibility_matching={source}",
            "eval.branches=false",
            "eval.pictures.enabled=false",
            *overrides,
            config_name="evaluate",
            tiny=False,
        )
        metrics = runner.evaluate(cfg)
        matched = metrics["visibility_matching"]
        assert matched["source"] == source and 0.0 <= matched["rank1"] <= 1.0
        assert "all_visibility" not in metrics["branches"]


def test_visibility_matching_on_features_without_part_weights_is_one_line():
    from reid.evaluation import FeatureSet
    from reid.evaluation.scoring import VisibilityMatchingError, visibility_scores

    rows = {name: torch.randn(4, 3) for name in ("global", "head", "upper_body", "upper_leg", "lower_leg", "all")}
    features = FeatureSet(rows, torch.arange(4), torch.arange(4), torch.tensor([1, 0, 0, 0]), ["a", "b", "c", "d"])
    with pytest.raises(
        VisibilityMatchingError, match="no part weights: the model has no inter-attention; choose keypoints"
    ):
        visibility_scores(features, source="mu")
    with pytest.raises(VisibilityMatchingError, match="no keypoint confidences"):
        visibility_scores(features, source="keypoints")


def test_the_extractor_keeps_the_branch_features_and_visibilities_beside_the_feature(trained):
    from reid.inference import FeatureExtractor

    _, datamodule, _ = trained
    paths = [r.image_path for r in datamodule.eval_set.records[:5]]
    extractor = FeatureExtractor(trained[0], device="cpu", pose_estimator="none", batch_size=2)
    extracted = extractor.extract(paths)
    assert torch.allclose(extracted.feature, extractor(paths))
    assert extracted.part_features.shape[:2] == (5, 4) and extracted.global_feature.shape[0] == 5
    assert extracted.part_weights is not None and extracted.part_weights.shape == (5, 4)
    assert torch.isnan(extracted.visibility("keypoints")).all()  # no keypoints given, no estimator


def test_search_with_visibility_matching_finds_the_query_itself_first(trained, tmp_path):
    import shutil

    from reid.inference.search import search

    _, datamodule, _ = trained
    records = datamodule.eval_set.records
    gallery = tmp_path / "gallery"
    gallery.mkdir()
    for record in records[-6:]:
        shutil.copy(record.image_path, gallery)
    query = records[0].image_path
    shutil.copy(query, gallery / "the_query_itself.jpg")
    for matching in ("mu", "keypoints"):
        found = search(trained[0], [query], gallery, tmp_path / matching, topk=3, device="cpu", matching=matching)
        first = found["indices"][0, 0].item()
        assert sorted(gallery.glob("*.jpg"))[first].name == "the_query_itself.jpg", matching
        assert found["distances"][0, 0] < 1e-4 and (found["distances"] >= 0).all()


def test_the_dense_erasing_label_teaches_the_map_where_the_crop_was_hidden():
    """model.visibility_target=erasing_map: each map location against the unerased share of the pixels it covers."""
    from reid.lit.module import unerased_map
    from reid.metrics.truth import mask_auroc

    rectangles = torch.tensor([[[1, 2, 3, 5], [0, 0, 0, 0], [0, 0, 4, 8], [2, 0, 4, 1]]])
    by_hand = torch.ones(1, 4, 4, 8)
    by_hand[0, 0, 1:3, 2:5] = 0
    by_hand[0, 2] = 0
    by_hand[0, 3, 2:4, 0:1] = 0
    assert torch.equal(unerased_map(rectangles, (4, 8)), by_hand)

    torch.manual_seed(0)
    net = AttentionReIDNet(num_classes=4, fusion="inter", inter_source="map", inter_weight="gate", width=0.25)
    module = ReIDModule(net, num_classes=4, optimizer=None, visibility_loss=1.0, visibility_target="erasing_map")
    whole, parts = torch.rand(32, 3, 64, 32) - 0.5, torch.rand(32, 4, 3, 32, 64) - 0.5
    erased = torch.zeros(32, 4, 4, dtype=torch.int64)
    for b in range(32):  # a solid block somewhere in each part crop
        for i in range(4):
            top, left = int(torch.randint(0, 16, ())), int(torch.randint(0, 32, ()))
            bottom, right = top + int(torch.randint(8, 17, ())), left + int(torch.randint(16, 33, ()))
            parts[b, i, :, top:bottom, left:right] = torch.rand(3, 1, 1) - 0.5
            erased[b, i] = torch.tensor([top, left, bottom, right])
    batch = {"parts": parts, "part_erased": erased}
    label = module.visibility_label(batch)
    assert label.shape == (32, 4, 32, 64)
    optimizer = torch.optim.Adam(module.parameters(), lr=3e-3)
    for _ in range(60):
        losses = module.compute_losses(module(whole, parts), torch.arange(32) % 4, label)
        optimizer.zero_grad()
        losses["loss_visibility"].backward()
        optimizer.step()
    maps = module.eval()(whole, parts).visibility_maps.detach()
    shown = torch.nn.functional.adaptive_avg_pool2d(label, maps.shape[-2:])
    assert maps.shape[-2] * maps.shape[-1] >= 4 and bool((shown < 0.5).any())
    # locations wholly visible score higher than mostly erased ones
    visible, hidden = maps[shown > 0.99], maps[shown < 0.5]
    score = mask_auroc(
        torch.cat([visible, hidden])[None], torch.cat([torch.ones_like(visible), torch.zeros_like(hidden)]).bool()[None]
    )
    assert float(score) > 0.8

    with pytest.raises(ValueError, match="inter_source=map"):
        plain = _module_with_target("erasing_map")
        plain.compute_losses(plain(whole, parts), torch.arange(32) % 4, label)


def test_keypoint_weights_are_the_batchs_confidence_and_a_hidden_part_is_switched_off():
    torch.manual_seed(0)
    net = AttentionReIDNet(
        num_classes=4, fusion="inter", inter_source="keypoints", inter_weight="gate", width=0.25, part_dim=8
    ).eval()
    assert net.needs_keypoints and net.fusion.part_weight is None  # nothing to learn, no unused head (DDP)
    module = ReIDModule(net, num_classes=4, optimizer=None)
    whole, parts = torch.rand(3, 3, 64, 32), torch.rand(3, 4, 3, 16, 32)
    confidence = torch.tensor([[0.9, 0.0, 0.6, 0.3], [float("nan")] * 4, [0.5, 0.5, 0.5, 0.5]])
    output = module(whole, parts, part_visibility=confidence)
    expected = torch.tensor([[0.9, 0.0, 0.6, 0.3], [1.0] * 4, [0.5] * 4])  # no keypoints: wholly visible
    assert torch.allclose(output.part_weights, expected)
    columns = net.feature_slices
    assert torch.all(output.feature[0, columns["upper_body"]] == 0)  # gate 2 mu: a hidden part adds nothing
    assert output.feature[0, columns["head"]].abs().sum() > 0
    # the same crops with other confidences: only the part columns move, each by its own weight
    other = module(whole, parts, part_visibility=confidence.flip(0)).feature
    assert torch.allclose(other[:, columns["global"]], output.feature[:, columns["global"]])
    assert not torch.allclose(other[:, columns["parts"]], output.feature[:, columns["parts"]])
    with pytest.raises(ValueError, match="inter_source=keypoints weighs the parts"):
        module(whole, parts)
    with pytest.raises(ValueError, match=r"got \(3, 5\)"):
        module(whole, parts, part_visibility=torch.ones(3, 5))
    # a network without keypoint weights ignores the keyword
    plain = AttentionReIDNet(num_classes=4, fusion="inter", width=0.25, part_dim=8).eval()
    assert not plain.needs_keypoints
    assert torch.equal(plain(whole, parts).feature, plain(whole, parts, part_visibility=confidence).feature)


def test_keypoint_weights_train_and_evaluate_from_the_batches(make_cfg, tmp_path):
    from reid.evaluation.features import MissingKeypointsError, extract_features, keypoint_inputs
    from reid.tasks import build_datamodule

    cfg = make_cfg("model=intra_inter", "model.net.inter_source=keypoints", "model.net.inter_weight=gate")
    datamodule = build_datamodule(cfg)
    batch = next(iter(datamodule.train_dataloader()))
    net = AttentionReIDNet(
        num_classes=datamodule.num_classes, fusion="inter", inter_source="keypoints", width=0.25, part_dim=8
    )
    module = ReIDModule(net, num_classes=datamodule.num_classes, optimizer=None)
    loss = module.training_step(batch, 0)
    assert torch.isfinite(loss)
    loader = datamodule.val_dataloader()
    features = extract_features(module, loader, paths=[str(i) for i in range(len(loader.dataset))])
    assert torch.allclose(features.part_weights, torch.nan_to_num(features.part_confidence, nan=1.0))
    with pytest.raises(MissingKeypointsError, match="data.regions=pose"):
        keypoint_inputs(net, None, "cpu")
    assert keypoint_inputs(AttentionReIDNet(num_classes=2, width=0.25), None, "cpu") == {}


def test_keypoint_weights_need_keypoints_and_learn_nothing(make_cfg):
    from reid.tasks.train import check_visibility_label

    check_visibility_label(make_cfg("model=intra_inter", "model.net.inter_source=keypoints"))
    with pytest.raises(ConfigError, match="data.regions=strips reads no keypoints"):
        check_visibility_label(make_cfg("model=intra_inter", "model.net.inter_source=keypoints", "data.regions=strips"))
    with pytest.raises(ConfigError, match="set model.visibility_loss=0"):
        check_visibility_label(
            make_cfg("model=intra_inter", "model.net.inter_source=keypoints", "model.visibility_loss=1")
        )


def test_a_parts_keypoint_visibility_is_its_joints_mean_confidence_or_the_share_detected(make_cfg):
    from reid.pose.regions import P4_LOWER_LEG, region_confidence
    from reid.tasks import build_datamodule

    keypoints = np.zeros((18, 3))
    keypoints[:, 2] = 0.6
    keypoints[list(P4_LOWER_LEG), 2] = [0.9, 0.05, 0.0, 0.5]  # knees found, one ankle doubted, one missed
    confidence = region_confidence(keypoints)
    detected = region_confidence(keypoints, "detected", min_conf=0.1)
    assert np.allclose(confidence, [0.6, 0.6, 0.6 * 2 / 4 + 0.9 / 4 + 0.05 / 4, (0.9 + 0.05 + 0.5) / 4])
    assert np.allclose(detected, [1.0, 1.0, 0.75, 0.5])  # however confident, a found joint counts 1
    assert np.isnan(region_confidence(None, "detected")).all()
    with pytest.raises(ValueError, match="part visibility must be one of"):
        region_confidence(keypoints, "visible")
    # the batches carry what data.pose.visibility says
    shares = build_datamodule(make_cfg("data.pose.visibility=detected")).eval_set.part_confidence
    means = build_datamodule(make_cfg()).eval_set.part_confidence
    assert shares.shape == means.shape and not np.allclose(shares, means)
    assert set(np.unique(shares * 72).round(3)) <= set(np.arange(73.0))  # shares of 4, 8 or 9 joints
    with pytest.raises(ConfigError, match="data.pose.visibility"):
        validate_config(make_cfg("data.pose.visibility=truth"))


def test_a_network_of_ones_own_without_keypoint_weights_is_called_as_before():
    class Plain(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = AttentionReIDNet(num_classes=4, width=0.25, part_dim=8)

        def forward(self, whole, parts, return_attention=False):  # no part_visibility keyword
            return self.inner(whole, parts, return_attention=return_attention)

    module = ReIDModule(Plain(), num_classes=4, optimizer=None).eval()
    whole, parts = torch.rand(2, 3, 64, 32), torch.rand(2, 4, 3, 16, 32)
    output = module(whole, parts, part_visibility=torch.rand(2, 4))
    assert output.feature.shape[0] == 2
