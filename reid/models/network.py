"""The five-branch attention-driven ReID network (Fig. 3); its options compose the paper's ablation models.

``AttentionReIDNet(num_classes, intra_attention=..., fusion=...)`` builds every ablation model
of Tables 6-9 from the same code (the baseline differs from ``aligned`` only in the crops the
data side feeds it). The models are data: ``conf/model/*.yaml`` lists them, and
:mod:`reid.variants` reads that list. Table 8 is ``decompose=False``; Eq. 5 against Eq. 7 is
``residual=False``.

Layout: ``stem`` is Conv1's shared convolution, ``global_branch`` the whole-body branch, and
the part branches are either ``part_branch`` (one grouped :class:`Branch` holding all four,
``group_parts=True``) or ``part_branches.0..3`` (four separate ones). The two layouts hold the
same numbers; :func:`part_state_dict_to_grouped` and :func:`part_state_dict_to_separate`
convert checkpoints between them. Identity classifiers are the modules named ``classifier``
(:func:`is_classifier_parameter`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, cast

import torch
from annotated_types import Ge, Gt, Interval
from torch import Tensor, nn

from reid.models.attention import AttentionNorm, UpsampleMode
from reid.models.blocks import SharedStemConv, init_weights, scaled_channels
from reid.models.branch import Branch, BranchOutput
from reid.models.fusion import (  # noqa: F401 - FUSIONS re-exported
    FUSION_REGISTRY,
    FUSIONS,
    INTER_SOURCES,
    NUM_PARTS,
    InterNorm,
    InterSource,
    InterWeight,
    make_fusion,
)
from reid.names import BRANCH_NAMES, PART_NAMES  # noqa: F401 - part of reid.models

# Table 1 at width 1.0: Conv1 channels and the bottleneck widths of Conv2x..Conv5x.
STEM_CHANNELS = 32
GLOBAL_STAGE_WIDTHS = (32, 64, 128, 256)
PART_STAGE_WIDTHS = (16, 32, 64, 128)


@dataclass
class NetworkOutput:
    """Everything one forward pass produces.

    Attributes:
        global_feature: E_g, FC_reduce output of the global branch (B, global_dim), before dropout.
        part_features: E_1..E_4 (B, 4, part_dim) in the order head, upper body, upper leg, lower leg.
        feature: the test-time feature (B, D): concat ``[E_g, E_1..E_4]``; inter
            ``[E_g, (mu_i + 1) E_i]``; fc the fusion layer's output.
        branch_logits: identity logits of the five branches (global first), each (B, num_classes).
        fused_logits: logits of the fused feature's classifier (fc / inter), else None.
        part_weights: mu (B, 4) for inter-attention, else None.
        attention: when requested and the network has intra-attention: branch name -> the
            masks m_i of B2, B3, B4, each (B, c, h, w) in [0, 1]; else None.
        spatial_attention: likewise the raw (pre-sigmoid) spatial maps S_i (B, 1, h, w) of the
            decomposed heads; None when not requested or not decomposed.
        visibility_maps: with ``inter_source=map``, the part branches' visibility logits
            (B, 4, h, w), one per location of each part's last feature map; else None.
    """

    global_feature: Tensor
    part_features: Tensor
    feature: Tensor
    branch_logits: tuple[Tensor, ...]
    fused_logits: Tensor | None = None
    part_weights: Tensor | None = None
    attention: dict[str, list[Tensor]] | None = None
    spatial_attention: dict[str, list[Tensor]] | None = None
    visibility_maps: Tensor | None = None


def is_classifier_parameter(name: str) -> bool:
    """True for parameters of identity classifiers (skip them when loading ImageNet weights)."""
    return "classifier" in name.split(".")


class AttentionReIDNet(nn.Module):
    """Five branches (whole body + head, upper body, upper leg, lower leg) with optional intra/inter-attention.

    Args:
        num_classes: training identities (every classifier's output size).
        intra_attention: give blocks B2..B4 of every branch an attention path (§3.3).
        decompose: decomposed spatial x channel attention (True) or the full h x w x c mask (Table 8).
        residual: ``(1 + m) * a`` (Eq. 7, True) or ``m * a`` (Eq. 5).
        fusion: ``concat`` (test-time concatenation), ``fc`` (FC fusion layer) or ``inter`` (Eq. 8-9).
        width: multiplies every channel count of Table 1 (not the feature sizes).
        global_dim: FC_reduce size of the global branch.
        part_dim: FC_reduce size of each part branch.
        dropout: dropout before every identity classifier.
        group_parts: run the four part branches as one grouped branch (same numbers; faster at
            small inputs on a CPU, slower at the paper's sizes: docs/benchmarks.md).
        fusion_dim: output size of the fc fusion layer (None: global_dim + 4 * part_dim).
        units_per_stage: bottleneck units in Conv2x..Conv5x (Table 1: 3 each).
        stage_strides: strides of Conv3x, Conv4x, Conv5x (silent in the paper; ResNet convention
            with the last down-sampling removed).
        part_pool_stride: stride of the part branches' first max-pool (Table 1: (1, 2)).
        attention_pools: encoder max-pooling steps in B2, B3, B4 (paper: 2, 1, 1).
        attention_bottleneck_ratio: width of the attention path's units relative to the block's
            output channels.
        attention_spatial_kernel: kernel size of the spatial convolution S.
        attention_channel_reduction: squeeze ratio of the channel convolution C (1 = one c x c conv).
        attention_upsample: ``bilinear`` or ``nearest`` up-sampling in the attention decoder.
        attention_norm: how the attention heads keep their logits in the sigmoid's working range:
            ``standardize`` (default), ``batch`` or ``none`` (the paper's literal head); see
            :mod:`reid.models.attention`.
        inter_norm: ``none`` (Eq. 8-9 as written), ``l2`` (the part features enter Eq. 8-9
            L2-normalised) or ``l2_batch`` (and mu's logit is standardised over the batch); see
            :class:`reid.models.fusion.InterAttentionFusion`.
        inter_weight: ``residual`` ((1 + mu) E_i, Eq. 9) or ``gate`` (2 mu E_i: a part's weight can
            fall below the global feature's); :data:`reid.models.fusion.INTER_WEIGHTS`.
        inter_source: where inter-attention's mu comes from (:data:`reid.models.fusion.INTER_SOURCES`):
            ``feature`` (Eq. 8: a linear layer on the pooled part feature E_i) or ``map`` (a 1x1
            convolution scores each location of the part's last feature map as visible or not, and
            mu_i is the mean: the crop's visible share, as VPM's region visibility) or ``keypoints``
            (the mean confidence of the part's joints, passed to :meth:`forward` as
            ``part_visibility``: PGFA's keypoint visibility, nothing learned).
        detach_fusion: the fusion (``fc`` / ``inter``) takes the branch features without their
            gradient, so Eq. 11's fused loss trains the fusion alone (its layer or mu's head, and
            its classifier) and the branches learn from their own losses, as with ``concat``.
            False (default): Eq. 11 as written, the fused loss trains the branches too. No
            effect on ``concat``, which has nothing to train.
        reduce_bn: BatchNorm1d after the FC_reduce linear layer.
        reduce_relu: ReLU after FC_reduce (the feature E is taken after it).
        zero_init_residual: start the last BN of every bottleneck at zero.
        classifier_std: std of the normal initialisation of the identity classifiers.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        intra_attention: bool = False,
        decompose: bool = True,
        residual: bool = True,
        fusion: str = "concat",
        width: Annotated[float, Interval(gt=0, le=8)] = 1.0,
        global_dim: Annotated[int, Ge(1)] = 256,
        part_dim: Annotated[int, Ge(1)] = 128,
        dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.5,
        group_parts: bool = True,
        fusion_dim: Annotated[int | None, Ge(1)] = None,
        units_per_stage: Annotated[tuple[int, int, int, int], Ge(1)] = (3, 3, 3, 3),
        stage_strides: Annotated[tuple[int, int, int], Ge(1)] = (2, 2, 1),
        part_pool_stride: Annotated[tuple[int, int], Ge(1)] = (1, 2),
        attention_pools: Annotated[tuple[int, int, int], Ge(1)] = (2, 1, 1),
        attention_bottleneck_ratio: Annotated[float, Interval(gt=0, le=1)] = 0.25,
        attention_spatial_kernel: Annotated[int, Ge(1)] = 3,
        attention_channel_reduction: Annotated[int, Ge(1)] = 16,
        attention_upsample: UpsampleMode = "bilinear",
        attention_norm: AttentionNorm = "standardize",
        inter_norm: InterNorm = "l2",
        inter_weight: InterWeight = "residual",
        inter_source: InterSource = "feature",
        detach_fusion: bool = False,
        reduce_bn: bool = True,
        reduce_relu: bool = True,
        zero_init_residual: bool = False,
        classifier_std: Annotated[float, Gt(0)] = 0.001,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if fusion not in FUSION_REGISTRY:
            raise ValueError(f"fusion must be one of {tuple(FUSION_REGISTRY)}, got {fusion!r}")
        if width <= 0:
            raise ValueError(f"width must be > 0, got {width}")
        if inter_source not in INTER_SOURCES:
            raise ValueError(f"inter_source must be one of {INTER_SOURCES}, got {inter_source!r}")
        self.num_classes = num_classes
        self.intra_attention = intra_attention
        self.decompose = decompose
        self.fusion_name = fusion
        self.group_parts = group_parts
        self.detach_fusion = detach_fusion
        self.global_dim = global_dim
        self.part_dim = part_dim
        self.classifier_std = classifier_std

        stem_channels = scaled_channels(STEM_CHANNELS, width)
        attention_options = {
            "decompose": decompose,
            "bottleneck_ratio": attention_bottleneck_ratio,
            "spatial_kernel": attention_spatial_kernel,
            "channel_reduction": attention_channel_reduction,
            "upsample_mode": attention_upsample,
            "norm": attention_norm,
        }
        common: dict[str, Any] = {
            "stem_channels": stem_channels,
            "units_per_stage": tuple(units_per_stage),
            "stage_strides": tuple(stage_strides),
            "num_classes": num_classes,
            "dropout": dropout,
            "intra_attention": intra_attention,
            "attention_pools": tuple(attention_pools),
            "residual": residual,
            "attention_options": attention_options,
            "reduce_bn": reduce_bn,
            "reduce_relu": reduce_relu,
        }
        part_options: dict[str, Any] = {
            **common,
            "stage_widths": tuple(scaled_channels(c, width) for c in PART_STAGE_WIDTHS),
            "pool_stride": tuple(part_pool_stride),
            "feature_dim": part_dim,
            "visibility_map": fusion == "inter" and inter_source == "map",
        }
        self.stem = SharedStemConv(stem_channels)
        self.global_branch = Branch(
            **common,
            stage_widths=tuple(scaled_channels(c, width) for c in GLOBAL_STAGE_WIDTHS),
            pool_stride=(2, 2),
            feature_dim=global_dim,
        )
        if group_parts:
            self.part_branch = Branch(**part_options, groups=NUM_PARTS)
        else:
            self.part_branches = nn.ModuleList(Branch(**part_options) for _ in range(NUM_PARTS))
        self.fusion = make_fusion(
            fusion, global_dim, part_dim, num_classes, fusion_dim, dropout, inter_norm, inter_weight, inter_source
        )
        self.feature_dim: int = self.fusion.out_dim
        init_weights(self, classifier_std=classifier_std, zero_init_residual=zero_init_residual)

    # ------------------------------------------------------------------ introspection
    @property
    def feature_slices(self) -> dict[str, slice]:
        """Which columns of ``NetworkOutput.feature`` belong to which branch (Table 7's per-branch rows).

        The fusion says (:meth:`reid.models.fusion.Fusion.feature_slices`): concat / inter give
        ``global``, the four part names, ``parts`` and ``all``; fc only ``all`` (its layer mixes
        the branches; per-branch features are still in ``global_feature`` and ``part_features``).
        """
        return self.fusion.feature_slices(self.global_dim, self.part_dim)

    def classifier_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the identity classifiers (branch classifiers and the fused one)."""
        return (param for name, param in self.named_parameters() if is_classifier_parameter(name))

    def reset_classifier(self, num_classes: int) -> None:
        """Replaces every identity classifier by a freshly initialised one with ``num_classes`` outputs."""
        self.num_classes = num_classes
        for branch in self._part_branch_modules() + [self.global_branch]:
            branch.reset_classifier(num_classes, self.classifier_std)
        old = getattr(self.fusion, "classifier", None)
        if old is not None:
            new = nn.Linear(old.in_features, num_classes).to(old.weight.device)
            nn.init.normal_(new.weight, std=self.classifier_std)
            nn.init.zeros_(new.bias)
            self.fusion.classifier = new

    def _part_branch_modules(self) -> list[Branch]:
        # nn.ModuleList is not generic: its items are typed as plain modules
        return [self.part_branch] if self.group_parts else cast(list[Branch], list(self.part_branches))

    def _memory_format(self) -> torch.memory_format:
        weight = self.stem.weight
        if weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous():
            return torch.channels_last
        return torch.contiguous_format

    # ------------------------------------------------------------------ forward
    @property
    def needs_keypoints(self) -> bool:
        """Whether :meth:`forward` needs ``part_visibility``, the images' keypoint confidence per part."""
        return bool(getattr(self.fusion, "needs_keypoints", False))

    def forward(
        self, whole: Tensor, parts: Tensor, return_attention: bool = False, part_visibility: Tensor | None = None
    ) -> NetworkOutput:
        """Runs the five branches and the fusion.

        Args:
            whole: whole-body crops (B, 3, H, W), e.g. 384x192.
            parts: part crops (B, 4, 3, h, w) in the order head, upper body, upper leg, lower leg,
                e.g. 96x192. Both are converted to the network's memory format.
            return_attention: also return the attention masks (and spatial maps).
            part_visibility: (B, 4) the mean keypoint confidence of each part's joints (a batch's
                ``part_confidence``), required with ``inter_source=keypoints`` and ignored otherwise.

        Returns:
            a :class:`NetworkOutput`.
        """
        if whole.dim() != 4 or whole.shape[1] != 3:
            raise ValueError(f"whole must be (B, 3, H, W) RGB crops, got shape {tuple(whole.shape)}")
        if parts.dim() != 5 or parts.shape[1] != NUM_PARTS or parts.shape[2] != 3:
            raise ValueError(
                f"parts must be (B, 4, 3, h, w), got shape {tuple(parts.shape)}; stack the four part crops "
                "(head, upper body, upper leg, lower leg) along dim 1"
            )
        if parts.shape[0] != whole.shape[0]:
            raise ValueError(f"whole and parts batch sizes differ: {whole.shape[0]} vs {parts.shape[0]}")
        memory_format = self._memory_format()
        batch = whole.shape[0]

        global_out = self.global_branch(self.stem(whole.contiguous(memory_format=memory_format)))
        if self.group_parts:
            stacked = parts.reshape(batch, NUM_PARTS * 3, *parts.shape[-2:])
            grouped = self.part_branch(self.stem(stacked.contiguous(memory_format=memory_format), groups=NUM_PARTS))
            part_outputs = _ungroup(grouped, batch)
        else:
            part_outputs = [
                branch(self.stem(parts[:, index].contiguous(memory_format=memory_format)))
                for index, branch in enumerate(self.part_branches)
            ]
        part_features = torch.cat([out.feature for out in part_outputs], dim=1)
        visibilities = [out.visibility for out in part_outputs if out.visibility is not None]
        if self.needs_keypoints:
            if part_visibility is None or tuple(part_visibility.shape) != (batch, NUM_PARTS):
                raise ValueError(
                    "inter_source=keypoints weighs the parts by the images' keypoint confidence: pass "
                    "part_visibility (B, 4), a batch's part_confidence; got "
                    f"{None if part_visibility is None else tuple(part_visibility.shape)}"
                )
            part_visibility = part_visibility.to(part_features.device)
        else:
            part_visibility = torch.cat(visibilities, dim=1) if visibilities else None
        global_feature, fused_parts = global_out.feature, part_features
        if self.detach_fusion:
            global_feature, fused_parts = global_feature.detach(), fused_parts.detach()
        # a fusion's contract is (E_g, E_parts); the visibility goes only to one that asked for it (map, keypoints)
        if part_visibility is None:
            fused = self.fusion(global_feature, fused_parts)
        else:
            fused = self.fusion(global_feature, fused_parts, part_visibility)

        score_maps = [out.visibility_logits for out in part_outputs if out.visibility_logits is not None]
        attention = spatial = None
        if return_attention and self.intra_attention:
            outputs = dict(zip(BRANCH_NAMES, [global_out, *part_outputs], strict=True))
            attention = {name: out.masks for name, out in outputs.items()}
            if self.decompose:
                spatial = {name: out.spatial for name, out in outputs.items()}
        return NetworkOutput(
            global_feature=global_out.feature,
            part_features=part_features.view(batch, NUM_PARTS, self.part_dim),
            feature=fused.feature,
            branch_logits=tuple(out.logits for out in [global_out, *part_outputs]),
            fused_logits=fused.logits,
            part_weights=fused.part_weights,
            attention=attention,
            spatial_attention=spatial,
            visibility_maps=torch.cat(score_maps, dim=1) if len(score_maps) == NUM_PARTS else None,
        )


def _ungroup(grouped: BranchOutput, batch: int) -> list[BranchOutput]:
    """The grouped part branch's output as four per-part outputs (views, no copies)."""
    features = grouped.feature.view(batch, NUM_PARTS, -1).unbind(1)
    logits = grouped.logits.view(batch, NUM_PARTS, -1).unbind(1)
    masks = [maps.chunk(NUM_PARTS, dim=1) for maps in grouped.masks]
    spatial = [maps.chunk(NUM_PARTS, dim=1) for maps in grouped.spatial]
    visibility = grouped.visibility.chunk(NUM_PARTS, dim=1) if grouped.visibility is not None else None
    scores = grouped.visibility_logits
    score_maps = scores.chunk(NUM_PARTS, dim=1) if scores is not None else None
    return [
        BranchOutput(
            features[i],
            logits[i],
            [m[i] for m in masks],
            [s[i] for s in spatial],
            visibility[i] if visibility is not None else None,
            score_maps[i] if score_maps is not None else None,
        )
        for i in range(NUM_PARTS)
    ]


_GROUPED_PREFIX = "part_branch."
_SEPARATE_PREFIX = "part_branches."


def part_state_dict_to_grouped(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Converts a ``group_parts=False`` state dict to the ``group_parts=True`` layout.

    Every part tensor of the four branches is concatenated along dim 0 (output channels); the
    scalar ``num_batches_tracked`` counters are taken from the first part.
    """
    converted: dict[str, Tensor] = {}
    part_keys: dict[str, list[Tensor | None]] = {}
    for key, value in state.items():
        if not key.startswith(_SEPARATE_PREFIX):
            converted[key] = value
            continue
        index_text, rest = key[len(_SEPARATE_PREFIX) :].split(".", 1)
        part_keys.setdefault(rest, [None] * NUM_PARTS)[int(index_text)] = value
    for rest, values in part_keys.items():
        if any(value is None for value in values):
            raise ValueError(f"state dict lacks some of the four part tensors for {_SEPARATE_PREFIX}*.{rest}")
        tensors = [value for value in values if value is not None]
        converted[_GROUPED_PREFIX + rest] = tensors[0].clone() if tensors[0].dim() == 0 else torch.cat(tensors, 0)
    return converted


def part_state_dict_to_separate(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Converts a ``group_parts=True`` state dict to the ``group_parts=False`` layout (inverse of the above)."""
    converted: dict[str, Tensor] = {}
    for key, value in state.items():
        if not key.startswith(_GROUPED_PREFIX):
            converted[key] = value
            continue
        rest = key[len(_GROUPED_PREFIX) :]
        chunks = [value] * NUM_PARTS if value.dim() == 0 else value.chunk(NUM_PARTS, dim=0)
        for index, chunk in enumerate(chunks):
            converted[f"{_SEPARATE_PREFIX}{index}.{rest}"] = chunk.clone()
    return converted
