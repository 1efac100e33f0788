"""Attention that is alive: the health figures themselves, healthy masks at init for every shipped
attention config and head, gradients that reach the attention paths, and mu that moves."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from reid.metrics.attention_health import BRANCH_NAMES, AttentionHealth, flatten_health, health_table
from reid.models import AttentionReIDNet
from reid.models.attention import ATTENTION_NORMS, DecomposedAttentionHead, FullAttentionHead
from reid.tasks import train
from reid.variants import model_variants

ATTENTION_MODELS = [variant.name for variant in model_variants() if variant.net["intra_attention"]]


def _inputs(
    batch: int, whole: tuple[int, int], part: tuple[int, int], seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random crops at the scale the data pipeline feeds (per-image channel means subtracted, / 255)."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 3, *whole, generator=generator)
    parts = torch.rand(batch, 4, 3, *part, generator=generator)
    return images - images.mean((2, 3), keepdim=True), parts - parts.mean((3, 4), keepdim=True)


def _mask_health(net: nn.Module, whole: torch.Tensor, parts: torch.Tensor) -> dict:
    net.train()  # the state training starts in (BatchNorm on batch statistics)
    health = AttentionHealth()
    with torch.no_grad():
        output = net(whole, parts, return_attention=True)
    health.update(output.attention, output.part_weights)
    return health.compute()


# ----------------------------------------------------------------------------- the figures


def test_health_figures_of_known_masks():
    health = AttentionHealth()
    half = torch.full((2, 3, 4, 4), 0.5)
    hard = torch.zeros(2, 3, 4, 4)
    hard[..., :2] = 1.0  # half the columns on, half off: every entry saturated, spatial std 0.5
    ramp = torch.linspace(0.2, 0.8, 16).reshape(1, 1, 4, 4).expand(2, 3, 4, 4)
    health.update({"global": [half, hard, ramp]}, torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.3, 0.2, 0.3, 0.0]]))
    result = health.compute()
    b2, b3, b4 = (result["intra"]["global"][b] for b in ("b2", "b3", "b4"))
    assert b2 == pytest.approx({"saturated": 0.0, "working": 0.25, "spatial_std": 0.0})
    assert b3 == pytest.approx({"saturated": 1.0, "working": 0.0, "spatial_std": 0.5})
    assert b4["spatial_std"] == pytest.approx(ramp[0, 0].std(unbiased=False).item(), rel=1e-5)
    assert b4["working"] == pytest.approx((ramp * (1 - ramp)).mean().item(), rel=1e-5)
    assert result["intra_mean"]["saturated"] == pytest.approx(1 / 3)
    assert set(result["intra"]) == {"global"}  # branches never seen are left out
    assert result["inter"]["head"] == pytest.approx({"mean": 0.2, "std": 0.1})
    assert result["inter"]["lower_leg"] == pytest.approx({"mean": 0.2, "std": 0.2})
    assert health.mu().shape == (2, 4)
    flat = flatten_health(result)
    assert flat["attention/global/b3/saturated"] == pytest.approx(1.0)
    assert flat["attention/mu/head/mean"] == pytest.approx(0.2)
    assert "| global | B3 | 100.0 | 0.000 | 0.500 |" in health_table(result)


def test_health_does_not_depend_on_batching_and_counts_only_selected_images():
    torch.manual_seed(0)
    masks = {name: [torch.rand(6, 4, 5, 3) for _ in range(3)] for name in BRANCH_NAMES}
    mu = torch.rand(6, 4)
    whole = AttentionHealth()
    whole.update(masks, mu)
    split = AttentionHealth()
    for rows in (slice(0, 2), slice(2, 6)):
        split.update({k: [m[rows] for m in v] for k, v in masks.items()}, mu[rows])
    assert flatten_health(split.compute()) == pytest.approx(flatten_health(whole.compute()))

    select = torch.tensor([True, False, True, False, False, False])
    selected = AttentionHealth()
    selected.update(masks, mu, select=select)
    only = AttentionHealth()
    only.update({k: [m[select] for m in v] for k, v in masks.items()}, mu[select])
    assert flatten_health(selected.compute()) == pytest.approx(flatten_health(only.compute()))
    assert flatten_health(selected.compute()) != pytest.approx(flatten_health(whole.compute()))


# ----------------------------------------------------------------------------- at initialisation


def test_every_state_stays_on_the_batchs_device():
    """NCCL gathers device tensors only: a state copied to the CPU broke DDP validation on a GPU
    ("No backend type associated with device type cpu"); the meta device stands in for the GPU."""
    from reid.metrics import ReIDMetric

    health = AttentionHealth().to("meta")
    health.update({"global": [torch.rand(4, 1, 8, 4, device="meta")]}, torch.rand(4, 4, device="meta"))
    metric = ReIDMetric().to("meta")
    ids = torch.zeros(4, dtype=torch.long, device="meta")
    metric.update(torch.rand(4, 8, device="meta"), ids, ids, ids.bool(), ids)
    for states in (health.metric_state, metric.metric_state):
        for name, value in states.items():
            for tensor in value if isinstance(value, list) else [value]:
                assert tensor.device.type == "meta", name


def test_the_shipped_attention_models_are_found():
    assert {"intra", "intra_inter"} <= set(ATTENTION_MODELS)


@pytest.fixture(scope="module")
def composed_models() -> dict:
    """``model -> config``, composed once by the first case that needs it (0.2 s each) and copied by each case."""
    return {}


@pytest.mark.parametrize("width", [0.25, 0.5, 1.0])
@pytest.mark.parametrize("decompose", [True, False])
@pytest.mark.parametrize("model", ATTENTION_MODELS)
def test_every_attention_config_starts_in_the_sigmoid_working_range(make_cfg, composed_models, model, decompose, width):
    if model not in composed_models:
        composed_models[model] = make_cfg(f"model={model}")
    cfg = copy.deepcopy(composed_models[model])
    cfg.model.net.decompose, cfg.model.net.width = decompose, width  # as model.net.decompose=... model.net.width=...
    net = instantiate(cfg.model.net)(num_classes=10).to(memory_format=torch.channels_last)
    health = _mask_health(net, *_inputs(4, (128, 64), (32, 64)))
    for branch, blocks in health["intra"].items():
        for block, figures in blocks.items():
            assert figures["saturated"] < 0.10, (branch, block, figures)
            assert figures["working"] > 0.15, (branch, block, figures)
            assert figures["spatial_std"] > 0.02, (branch, block, figures)  # not a per-channel constant
    if "inter" in health:
        assert all(abs(f["mean"] - 0.5) < 0.01 for f in health["inter"].values())  # mu starts at 0.5


@pytest.mark.parametrize("norm", ATTENTION_NORMS)
@pytest.mark.parametrize("decompose", [True, False])
def test_every_head_option_starts_healthy_at_the_paper_size(norm, decompose):
    net = AttentionReIDNet(10, intra_attention=True, fusion="inter", decompose=decompose, attention_norm=norm)
    health = _mask_health(net.to(memory_format=torch.channels_last), *_inputs(2, (384, 192), (96, 192)))
    assert health["intra_mean"]["saturated"] < 0.10, health["intra_mean"]
    assert health["intra_mean"]["working"] > 0.15, health["intra_mean"]


def test_the_networks_generic_init_would_saturate_the_heads():
    """The check above can fail: Kaiming fan-out on the head convolutions (the former init) saturates."""
    net = AttentionReIDNet(10, intra_attention=True, attention_norm="none", width=0.5)
    for module in net.modules():
        if isinstance(module, (DecomposedAttentionHead, FullAttentionHead)):
            for conv in module.modules():
                if isinstance(conv, nn.Conv2d):
                    fan_out = conv.weight.shape[0] // conv.groups * conv.weight.shape[2] * conv.weight.shape[3]
                    nn.init.normal_(conv.weight, std=math.sqrt(2.0 / fan_out))
    health = _mask_health(net.to(memory_format=torch.channels_last), *_inputs(4, (128, 64), (32, 64)))
    assert health["intra_mean"]["saturated"] > 0.10


# ----------------------------------------------------------------------------- while training


def _train_steps(net: nn.Module, steps: int, lr: float = 0.05, seed: int = 0) -> list[float]:
    """A few SGD steps (the synthetic recipe's optimiser) on a fixed random batch with 8 identities."""
    whole, parts = _inputs(16, (64, 32), (16, 32), seed=seed)
    labels = torch.arange(16) % 8
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    losses = []
    net.train()
    for _ in range(steps):
        optimizer.zero_grad()
        output = net(whole, parts)
        loss = 0.5 * sum(F.cross_entropy(logits, labels) for logits in output.branch_logits)
        if output.fused_logits is not None:
            loss = loss + F.cross_entropy(output.fused_logits, labels)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    optimizer.zero_grad()
    output = net(whole, parts)
    loss = 0.5 * sum(F.cross_entropy(logits, labels) for logits in output.branch_logits)
    (loss + (F.cross_entropy(output.fused_logits, labels) if output.fused_logits is not None else 0)).backward()
    return losses


def _relative_gradient(net: nn.Module, select) -> float:
    """Median over the selected weight tensors of |grad| / |weight|: how fast SGD moves them."""
    ratios = sorted(
        float(p.grad.norm() / p.norm().clamp_min(1e-12))
        for name, p in net.named_parameters()
        if p.dim() > 1 and p.grad is not None and select(name)
    )
    assert ratios, "no parameter selected"
    return ratios[len(ratios) // 2]


@pytest.mark.parametrize("decompose", [True, False])
def test_attention_paths_get_gradients_comparable_to_the_feature_paths(decompose):
    torch.manual_seed(0)
    net = AttentionReIDNet(8, intra_attention=True, fusion="inter", width=0.25, decompose=decompose)
    _train_steps(net.to(memory_format=torch.channels_last), steps=5)
    attention = _relative_gradient(net, lambda name: ".attention." in name)
    heads = _relative_gradient(net, lambda name: ".attention.head." in name)
    features = _relative_gradient(net, lambda name: ".units." in name)
    assert attention > features / 30, (attention, features)
    assert heads > features / 30, (heads, features)


def test_saturated_heads_starve_of_gradient():
    """The check above can fail: with every mask pushed to 1 the heads get almost no gradient."""
    torch.manual_seed(0)
    net = AttentionReIDNet(8, intra_attention=True, fusion="inter", width=0.25)
    for module in net.modules():
        if isinstance(module, DecomposedAttentionHead):
            nn.init.constant_(module.logit_conv.bias, 12.0)
    _train_steps(net.to(memory_format=torch.channels_last), steps=5)
    features = _relative_gradient(net, lambda name: ".units." in name)
    assert _relative_gradient(net, lambda name: ".attention.head." in name) < features / 1000


def _mu_after_short_run(inter_norm: str) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    net = AttentionReIDNet(8, fusion="inter", width=0.25, inter_norm=inter_norm).to(memory_format=torch.channels_last)
    whole, parts = _inputs(16, (64, 32), (16, 32))
    net.eval()
    with torch.no_grad():
        before = net(whole, parts).part_weights
    losses = _train_steps(net, steps=30)
    assert losses[-1] < losses[0]
    net.eval()
    with torch.no_grad():
        after = net(whole, parts).part_weights
    return before, after


def test_mu_moves_without_being_pinned_after_a_short_run():
    before, after = _mu_after_short_run("l2")
    assert (before - 0.5).abs().max() < 0.01  # mu starts at 0.5
    assert (after - before).abs().mean() > 0.01  # it is learnt
    assert float(after.min()) > 0.05 and float(after.max()) < 0.95  # and not pinned at either end


def test_literal_inter_attention_pins_mu_within_a_short_run():
    """Why inter_norm=l2 exists: with Eq. 8 as written, mu's logit moves by about lr * |E_i|^2 per
    step (E_i >= 0, |E_i| ~ 8), and 30 steps of the recipe's SGD pin mu at 0."""
    _, after = _mu_after_short_run("none")
    assert float(after.mean()) < 0.05 or float(after.mean()) > 0.95


# ----------------------------------------------------------------------------- logged and written


def test_training_logs_attention_health_into_metrics_json(make_cfg, tmp_path):
    cfg = make_cfg("model=intra_inter", "trainer.max_epochs=1", "trainer.limit_train_batches=2", "logger=csv")
    metrics = train(cfg)
    written = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    attention = written["attention"]
    assert set(attention["intra"]) == set(BRANCH_NAMES)
    assert set(attention["intra"]["global"]) == {"b2", "b3", "b4"}
    assert 0.0 <= attention["intra_mean"]["saturated"] <= 1.0
    assert set(attention["inter"]) == {"head", "upper_body", "upper_leg", "lower_leg"}
    assert json.dumps(metrics["attention"], sort_keys=True) == json.dumps(attention, sort_keys=True)  # NaN-safe
    csv_files = list(Path(cfg.paths.output_dir).rglob("metrics.csv"))
    header = csv_files[0].read_text().splitlines()[0].split(",")
    assert "val/attention/global/b2/spatial_std" in header and "val/attention/mu/head/mean" in header


def test_models_without_attention_write_no_attention_figures(make_cfg):
    cfg = make_cfg("model=aligned", "trainer.fast_dev_run=true")
    assert "attention" not in train(cfg)


def test_stored_model_config_round_trips_the_new_options(make_cfg):
    cfg = make_cfg("model=intra_inter", "model.net.attention_norm=batch", "model.net.inter_norm=l2")
    net = instantiate(cfg.model.net)(num_classes=5)
    assert net.fusion.norm == "l2"
    assert all(m.norm == "batch" for m in net.modules() if isinstance(m, (DecomposedAttentionHead, FullAttentionHead)))
    assert OmegaConf.select(cfg, "model.fused_label_smoothing") is None


def test_knockout_scores_flatten_the_masks_and_score_each_mode(trained):
    import torch

    from reid import tasks as runner
    from reid.lit.module import ReIDModule
    from reid.models.attention import attention_knockout

    checkpoint, datamodule, cfg = trained
    module = ReIDModule.load_from_checkpoint(checkpoint).eval()
    scores = runner.knockout_scores(module, datamodule, cfg)
    assert set(scores) == {"spatial", "channel"}
    for figures in scores.values():
        assert 0.0 <= figures["rank1"] <= 1.0 and 0.0 < figures["mAP"] <= 1.0
    batch = next(iter(datamodule.val_dataloader()))
    with torch.no_grad():
        plain = module(batch["whole"], batch["parts"]).feature
        with attention_knockout(module.net, "spatial"):
            flat = module(batch["whole"], batch["parts"]).feature
    assert not torch.allclose(plain, flat)  # the knockout changes what the network computes
