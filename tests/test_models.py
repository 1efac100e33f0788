"""Tests of reid.models: shapes, attention semantics, grouped parts, parameter and MAC counts."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reid.models import (
    BRANCH_NAMES,
    PART_NAMES,
    AttentionReIDNet,
    ResNet50,
    count_macs,
    count_parameters,
    is_classifier_parameter,
    part_state_dict_to_grouped,
    part_state_dict_to_separate,
)
from reid.models.attention import DecomposedAttentionHead, FullAttentionHead
from reid.models.fusion import FUSION_REGISTRY
from reid.variants import build_variant, model_variants

NUM_CLASSES = 7
GLOBAL_DIM, PART_DIM = 16, 8
TINY = {"width": 0.25, "global_dim": GLOBAL_DIM, "part_dim": PART_DIM}
WHOLE, PART = (64, 32), (16, 32)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny tensors: with 2 threads on a shared machine OpenMP waits dominate (50x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(variant: str, **options) -> AttentionReIDNet:
    torch.manual_seed(0)
    return build_variant(variant, NUM_CLASSES, **{**TINY, **options})


def inputs(batch: int = 2, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    whole = torch.randn(batch, 3, *WHOLE, generator=generator, dtype=dtype)
    parts = torch.randn(batch, 4, 3, *PART, generator=generator, dtype=dtype)
    return whole, parts


def force_attention(net: nn.Module, bias: float) -> None:
    """Makes every attention mask sigmoid(bias): logit conv weights 0, biases ``bias``."""
    for module in net.modules():
        if isinstance(module, (DecomposedAttentionHead, FullAttentionHead)):
            nn.init.zeros_(module.logit_conv.weight)
            nn.init.constant_(module.logit_conv.bias, bias)


# --------------------------------------------------------------------------- shapes
@pytest.mark.parametrize(
    ("variant", "feature_dim", "fused"),
    [
        ("baseline", GLOBAL_DIM + 4 * PART_DIM, False),
        ("intra", GLOBAL_DIM + 4 * PART_DIM, False),
        ("inter", GLOBAL_DIM + 4 * PART_DIM, True),
        ("intra_inter", GLOBAL_DIM + 4 * PART_DIM, True),
        ("intra_fc", 20, True),
    ],
)
def test_output_shapes_per_variant(variant: str, feature_dim: int, fused: bool) -> None:
    net = tiny(variant, fusion_dim=20).eval()
    out = net(*inputs(batch=3))
    assert out.global_feature.shape == (3, GLOBAL_DIM)
    assert out.part_features.shape == (3, 4, PART_DIM)
    assert out.feature.shape == (3, feature_dim) and net.feature_dim == feature_dim
    assert len(out.branch_logits) == 5 and all(t.shape == (3, NUM_CLASSES) for t in out.branch_logits)
    assert (out.fused_logits is not None) == fused
    if fused:
        assert out.fused_logits.shape == (3, NUM_CLASSES)
    assert (out.part_weights is not None) == (variant in ("inter", "intra_inter"))
    assert out.attention is None


@pytest.mark.parametrize("variant", model_variants(), ids=lambda variant: variant.name)
def test_every_model_of_conf_model_builds_what_its_options_say(variant) -> None:
    net = tiny(variant.name).eval()
    out = net(*inputs())
    fusion = FUSION_REGISTRY[variant.net["fusion"]]
    assert isinstance(net.fusion, fusion)
    assert (out.fused_logits is not None) == fusion.has_fused_classifier
    assert net.intra_attention == variant.net["intra_attention"]
    assert (net(*inputs(), return_attention=True).attention is not None) == variant.net["intra_attention"]


def test_concat_feature_slices_pick_each_branch() -> None:
    net = tiny("baseline").eval()
    out = net(*inputs())
    slices = net.feature_slices
    assert slices["head"] == slice(16, 24) and slices["lower_leg"] == slice(40, 48)
    torch.testing.assert_close(out.feature[:, slices["global"]], out.global_feature)
    for index, name in enumerate(PART_NAMES):
        torch.testing.assert_close(out.feature[:, slices[name]], out.part_features[:, index])
    assert net.feature_slices.keys() >= {"all", "parts", *BRANCH_NAMES}
    assert tiny("intra_fc").feature_slices == {"all": slice(0, 48)}


@pytest.mark.parametrize("inter_norm", ["none", "l2"])
def test_inter_attention_follows_eq_8_and_9(inter_norm: str) -> None:
    net = tiny("inter", inter_norm=inter_norm).eval()
    out = net(*inputs())
    fc = net.fusion.part_weight
    weight = fc.weight.view(4, PART_DIM)
    for index, name in enumerate(PART_NAMES):
        e_i = out.part_features[:, index]
        if inter_norm == "l2":  # E_i enters both equations with unit norm, then the mean BN-ReLU norm sqrt(d/2)
            e_i = e_i / e_i.norm(dim=1, keepdim=True)
            mu = torch.sigmoid(e_i @ weight[index] + fc.bias[index])
            e_i = e_i * (PART_DIM / 2) ** 0.5
        else:
            mu = torch.sigmoid(e_i @ weight[index] + fc.bias[index])  # Eq. 8, by hand
        torch.testing.assert_close(out.part_weights[:, index], mu)
        torch.testing.assert_close(out.feature[:, net.feature_slices[name]], (mu + 1).unsqueeze(1) * e_i)  # Eq. 9
    torch.testing.assert_close(out.feature[:, :GLOBAL_DIM], out.global_feature)  # E_g keeps weight 1
    assert ((out.part_weights > 0) & (out.part_weights < 1)).all()


def test_demo_sizes_run() -> None:
    net = tiny("intra_inter").eval()
    out = net(torch.randn(1, 3, 128, 64), torch.randn(1, 4, 3, 32, 64), return_attention=True)
    assert out.feature.shape == (1, 48)
    # 128x64 -> Conv1 64x32 -> max-pool 32x16 -> B2 (stride 2) 16x8 -> B3 8x4 -> B4 (stride 1) 8x4
    assert [tuple(m.shape[-2:]) for m in out.attention["global"]] == [(16, 8), (8, 4), (8, 4)]
    # 32x64 -> Conv1 16x32 -> max-pool stride (1, 2) 16x16 -> 8x8 -> 4x4 -> 4x4
    assert [tuple(m.shape[-2:]) for m in out.attention["head"]] == [(8, 8), (4, 4), (4, 4)]


def test_bad_input_shapes_raise() -> None:
    net = tiny("baseline")
    whole, parts = inputs()
    with pytest.raises(ValueError, match="parts must be"):
        net(whole, parts[:, :3])
    with pytest.raises(ValueError, match="whole must be"):
        net(whole[:, :1], parts)
    with pytest.raises(ValueError, match="batch sizes differ"):
        net(whole[:1], parts)
    with pytest.raises(ValueError, match="fusion must be"):
        AttentionReIDNet(3, fusion="sum")


# --------------------------------------------------------------------------- attention
def test_attention_maps_shapes_and_range() -> None:
    net = tiny("intra").eval()
    out = net(*inputs(), return_attention=True)
    assert set(out.attention) == set(BRANCH_NAMES) == set(out.spatial_attention)
    # width 0.25: global blocks output 32, 64, 128 channels; parts 16, 32, 64.
    # whole 64x32 -> 32x16 -> 16x8 -> B2 8x4, B3 4x2, B4 4x2; parts 16x32 -> 8x16 -> 8x8 -> 4x4, 2x2, 2x2
    assert [tuple(m.shape) for m in out.attention["global"]] == [(2, 32, 8, 4), (2, 64, 4, 2), (2, 128, 4, 2)]
    for name in PART_NAMES:
        assert [tuple(m.shape) for m in out.attention[name]] == [(2, 16, 4, 4), (2, 32, 2, 2), (2, 64, 2, 2)]
        assert [tuple(s.shape) for s in out.spatial_attention[name]] == [(2, 1, 4, 4), (2, 1, 2, 2), (2, 1, 2, 2)]
    for maps in out.attention.values():
        for mask in maps:
            assert mask.min() >= 0 and mask.max() <= 1
            assert mask.std() > 0  # not a constant
    assert tiny("baseline")(*inputs(), return_attention=True).attention is None
    full = tiny("intra", decompose=False).eval()(*inputs(), return_attention=True)
    assert full.spatial_attention is None and full.attention["global"][0].shape == (2, 32, 8, 4)


def test_residual_attention_with_zero_mask_is_the_plain_network() -> None:
    intra = tiny("intra").eval()
    force_attention(intra, -1e4)  # sigmoid(-1e4) == 0 exactly in float32
    plain = tiny("baseline").eval()
    shared = {k: v for k, v in intra.state_dict().items() if k in plain.state_dict()}
    assert shared.keys() == plain.state_dict().keys()  # the base network is a sub-network
    plain.load_state_dict(shared)
    out = intra(*inputs(), return_attention=True)
    assert all((m == 0).all() for maps in out.attention.values() for m in maps)
    torch.testing.assert_close(out.feature, plain(*inputs()).feature)


def test_plain_masking_zero_mask_gives_zero_and_unit_mask_gives_features() -> None:
    net = tiny("intra", residual=False).eval()
    block = net.global_branch.blocks[1]
    x = torch.randn(2, 16, 16, 8)  # B2's input at width 0.25: 16 channels
    force_attention(net, -1e4)
    out = block(x)
    assert (out.mask == 0).all() and (out.features == 0).all()  # Eq. 5: 0 * a
    force_attention(net, 1e4)
    out = block(x)
    torch.testing.assert_close(out.features, block.units(x))  # Eq. 5: 1 * a


def test_decomposed_head_has_fewer_parameters_than_full_head() -> None:
    c = 128
    # spatial 3x3 conv c -> 1 (+1 bias); SE c -> 8 -> c (+ biases); depthwise 1x1 (weight + bias)
    decomposed = (9 * c + 1) + (c * 8 + 8 + 8 * c + c) + 2 * c
    full = c * c + c
    assert count_parameters(DecomposedAttentionHead(c)) == decomposed == 3593
    assert count_parameters(FullAttentionHead(c, norm="none")) == full == 16512
    assert count_parameters(FullAttentionHead(c)) == full + 2 * c  # + the GroupNorm's affine
    assert count_parameters(build_variant("intra", 751, decompose=True)) < count_parameters(
        build_variant("intra", 751, decompose=False)
    )


def test_gradients_reach_every_parameter_of_the_full_model() -> None:
    net = tiny("intra_inter").train()
    out = net(*inputs(batch=4))
    labels = torch.tensor([0, 1, 2, 3])
    branch_loss = sum(F.cross_entropy(t, labels) for t in out.branch_logits)
    loss = 0.5 * branch_loss + F.cross_entropy(out.fused_logits, labels)
    loss.backward()
    missing = [name for name, p in net.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert missing == []


@pytest.mark.parametrize("variant", ["intra_inter", "intra_fc"])
@pytest.mark.parametrize("detach", [False, True])
def test_detach_fusion_keeps_the_fused_loss_out_of_the_branches(variant: str, detach: bool) -> None:
    net = tiny(variant, detach_fusion=detach).train()
    out = net(*inputs(batch=4))
    F.cross_entropy(out.fused_logits, torch.tensor([0, 1, 2, 3])).backward()
    reached = {name for name, p in net.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    branches = {name for name in reached if not name.startswith("fusion.")}
    assert any(name.startswith("fusion.classifier") for name in reached)  # the fusion learns either way
    if variant == "intra_inter":
        assert any(name.startswith("fusion.part_weight") for name in reached)  # and so does mu's head
    assert (branches == set()) == detach
    # the test-time feature is the same network either way
    fresh, other = tiny(variant, detach_fusion=detach).eval(), tiny(variant, detach_fusion=not detach).eval()
    with torch.no_grad():
        assert torch.equal(fresh(*inputs()).feature, other(*inputs()).feature)


# --------------------------------------------------------------------------- grouped parts, memory format
def test_grouped_parts_equal_separate_parts() -> None:
    separate = tiny("intra_inter", group_parts=False, dropout=0.0).double()
    grouped = tiny("intra_inter", group_parts=True, dropout=0.0).double()
    grouped.load_state_dict(part_state_dict_to_grouped(separate.state_dict()))
    whole, parts = inputs(batch=3, dtype=torch.float64)
    for mode in ("train", "eval"):  # train: batch statistics; eval: running statistics
        getattr(separate, mode)()
        getattr(grouped, mode)()
        a = separate(whole, parts, return_attention=True)
        b = grouped(whole, parts, return_attention=True)
        torch.testing.assert_close(a.feature, b.feature)
        torch.testing.assert_close(a.fused_logits, b.fused_logits)
        for x, y in zip(a.branch_logits, b.branch_logits):
            torch.testing.assert_close(x, y)
        for name in PART_NAMES:
            for x, y in zip(a.attention[name], b.attention[name]):
                torch.testing.assert_close(x, y)
    # and back: the round trip restores the separate layout exactly
    back = part_state_dict_to_separate(grouped.state_dict())
    assert back.keys() == separate.state_dict().keys()
    assert all(torch.equal(back[k], v) for k, v in separate.state_dict().items())


@pytest.mark.parametrize("group_parts", [False, True])
def test_channels_last_matches_contiguous(group_parts: bool) -> None:
    net = tiny("intra_inter", group_parts=group_parts).eval()
    fast = copy.deepcopy(net).to(memory_format=torch.channels_last)
    whole, parts = inputs()
    torch.testing.assert_close(
        fast(whole.contiguous(memory_format=torch.channels_last), parts).feature,
        net(whole, parts).feature,
        rtol=1e-4,
        atol=1e-4,
    )


# --------------------------------------------------------------------------- classifiers
def test_reset_classifier_and_classifier_parameters() -> None:
    net = tiny("inter")
    # branch classifiers (16 -> 7, four times 8 -> 7) and the fused one (48 -> 7), with biases
    assert sum(p.numel() for p in net.classifier_parameters()) == (16 * 7 + 7) + 4 * (8 * 7 + 7) + (48 * 7 + 7)
    net.reset_classifier(11)
    out = net.eval()(*inputs())
    assert all(t.shape == (2, 11) for t in out.branch_logits) and out.fused_logits.shape == (2, 11)
    assert count_parameters(net) - count_parameters(net, exclude_classifier=True) == (
        (16 * 11 + 11) + 4 * (8 * 11 + 11) + (48 * 11 + 11)
    )
    assert is_classifier_parameter("part_branch.classifier.weight")
    assert not is_classifier_parameter("fusion.part_weight.weight")


# --------------------------------------------------------------------------- size and cost
def _bottleneck(i: int, m: int, o: int) -> int:
    """Parameters of a bottleneck: three convs, three BNs, a projection + BN when i != o."""
    return i * m + 9 * m * m + m * o + 2 * (m + m + o) + ((i * o + 2 * o) if i != o else 0)


def _stage(i: int, m: int) -> int:
    return _bottleneck(i, m, 2 * m) + 2 * _bottleneck(2 * m, m, 2 * m)


def test_paper_size_base_parameter_count_by_hand() -> None:
    classes = 751
    conv1 = 3 * 32 * 9
    global_branch = 2 * 32 + _stage(32, 32) + _stage(64, 64) + _stage(128, 128) + _stage(256, 256)
    part_branch = 2 * 32 + _stage(32, 16) + _stage(32, 32) + _stage(64, 64) + _stage(128, 128)
    reduce = (512 * 256 + 2 * 256) + 4 * (256 * 128 + 2 * 128)  # linear without bias + BN1d
    classifiers = (256 * classes + classes) + 4 * (128 * classes + classes)
    expected = conv1 + global_branch + 4 * part_branch + reduce + classifiers
    assert expected == 7_847_627
    net = build_variant("baseline", classes)
    assert count_parameters(net) == expected
    assert count_parameters(net, exclude_classifier=True) == expected - classifiers == 7_267_104
    # Table 12 says 6.8 M; the documented tolerance (complexity.py) is 10% without classifiers
    assert abs(count_parameters(net, exclude_classifier=True) - 6.8e6) / 6.8e6 < 0.10


def test_count_macs_by_hand() -> None:
    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 6, 3, padding=1, groups=3)
            self.fc = nn.Linear(150, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.conv(x).flatten(1))

    # conv: 6 * 5 * 5 outputs x (3 / 3) * 3 * 3 products; fc: 2 outputs x 150
    assert count_macs(Tiny(), (5, 5), None) == 150 * 9 + 2 * 150 == 1650


def test_resnet50_matches_torchvision_size_and_cost() -> None:
    net = ResNet50(1000)
    assert count_parameters(net) == 25_557_032
    assert count_parameters(net, exclude_classifier=True) == 23_508_032  # Table 12: 23.5 M
    assert count_macs(net, (224, 224), None) == 4_089_184_256


def test_a_new_fusion_is_one_registered_class_and_table7_follows_its_contract():
    import torch

    from reid.models import AttentionReIDNet
    from reid.models.fusion import FUSION_REGISTRY, Fusion, FusionOutput, register_fusion

    @register_fusion("sum_test")
    class SumFusion(Fusion):
        keeps_branch_columns = False

        def __init__(self, global_dim: int, part_dim: int) -> None:
            super().__init__()
            self.proj = torch.nn.Linear(part_dim, global_dim)
            self.out_dim = global_dim

        @classmethod
        def build(cls, *, global_dim, part_dim, **_):
            return cls(global_dim, part_dim)

        def forward(self, global_feature, part_features):
            parts = part_features.view(part_features.shape[0], 4, -1)
            return FusionOutput(global_feature + self.proj(parts).sum(1), None, None)

    try:
        net = AttentionReIDNet(num_classes=5, fusion="sum_test", width=0.25).eval()
        output = net(torch.rand(2, 3, 64, 32), torch.rand(2, 4, 3, 16, 32))
        assert output.feature.shape == (2, net.global_dim) and net.feature_dim == net.global_dim
        assert net.feature_slices == {"all": slice(0, net.global_dim)}  # from the contract, not the name
        inter = AttentionReIDNet(num_classes=5, fusion="inter", width=0.25)
        assert set(inter.feature_slices) == {"all", "global", "head", "upper_body", "upper_leg", "lower_leg", "parts"}
    finally:
        FUSION_REGISTRY.pop("sum_test")
