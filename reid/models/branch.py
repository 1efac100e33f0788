"""One branch of the network (Table 1 column): Conv1's BN, max-pool, blocks B1..B4, FC_reduce, identity classifier.

With ``groups=4`` one :class:`Branch` holds the four part branches side by side along the
channel axis (every convolution, BN and FC is grouped), so that one kernel runs all four.

Choices where the paper is silent (keyword options):

- Conv1's *convolution* is shared by the five branches (:class:`SharedStemConv`, owned by the
  network); its BatchNorm is per branch, because whole-body and part crops have different
  statistics and sizes, so a shared BN's running statistics would mix them by call order.
- FC_reduce is ``Linear (no bias) -> BatchNorm1d -> ReLU`` (``reduce_bn``, ``reduce_relu``);
  its output E is the retrieval feature, dropout (p = 0.5) comes after it, before the
  identity classifier.
- Strides of Conv3x, Conv4x, Conv5x: (2, 2, 1), the ResNet convention with the last
  down-sampling removed (``stage_strides``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reid.models.attention import AttentionBlock, AttentionPath
from reid.models.blocks import GroupedLinear, make_stage, spatial_mean


class BranchOutput(NamedTuple):
    """Feature E (B, g*dim), logits (B, g*num_classes), attention masks and spatial maps of B2..B4."""

    feature: Tensor
    logits: Tensor
    masks: list[Tensor]
    spatial: list[Tensor]
    #: (B, g) visible share of each group's crop (the mean of its visibility map), or None
    visibility: Tensor | None = None
    #: (B, g, h, w) the visibility map's logits (one score per location of the last feature map), or None
    visibility_logits: Tensor | None = None


class Branch(nn.Module):
    """Conv2x..Conv5x (blocks B1..B4), average pool, FC_reduce, dropout, identity classifier.

    Args:
        stem_channels: channels of Conv1's output per group.
        stage_widths: bottleneck widths of Conv2x..Conv5x per group; each stage outputs twice
            its width (Table 1: global 32, 64, 128, 256; parts 16, 32, 64, 128).
        units_per_stage: bottleneck units in each of Conv2x..Conv5x.
        pool_stride: stride of the 3x3 max-pool that opens Conv2x ((2, 2) global, (1, 2) parts).
        stage_strides: strides of Conv3x, Conv4x, Conv5x.
        feature_dim: FC_reduce output size (256 global, 128 part).
        num_classes: identities of the classifier.
        groups: branches side by side (1, or 4 for the grouped part branches).
        dropout: dropout probability before the classifier.
        intra_attention: give B2..B4 an attention path.
        attention_pools: encoder max-pooling steps of B2, B3, B4.
        residual: residual attention (Eq. 7) instead of plain masking (Eq. 5).
        attention_options: keyword options of :class:`AttentionPath` (decompose, bottleneck_ratio,
            spatial_kernel, channel_reduction, upsample_mode).
        reduce_bn: BatchNorm1d after the FC_reduce linear layer.
        reduce_relu: ReLU after FC_reduce.
        visibility_map: a 1x1 convolution on the last block's output scores every location as
            visible person or not (a sigmoid); its mean over the map is the crop's visible share,
            returned as ``BranchOutput.visibility`` (VPM's region visibility, Sun et al. 2019).
    """

    def __init__(
        self,
        *,
        stem_channels: int,
        stage_widths: Sequence[int],
        units_per_stage: Sequence[int],
        pool_stride: tuple[int, int],
        stage_strides: Sequence[int],
        feature_dim: int,
        num_classes: int,
        groups: int = 1,
        dropout: float = 0.5,
        intra_attention: bool = False,
        attention_pools: Sequence[int] = (2, 1, 1),
        residual: bool = True,
        attention_options: dict | None = None,
        reduce_bn: bool = True,
        reduce_relu: bool = True,
        visibility_map: bool = False,
    ) -> None:
        super().__init__()
        if len(stage_widths) != 4 or len(units_per_stage) != 4:
            raise ValueError("stage_widths and units_per_stage need 4 entries (Conv2x..Conv5x)")
        if len(stage_strides) != 3 or len(attention_pools) != 3:
            raise ValueError("stage_strides and attention_pools need 3 entries (Conv3x..Conv5x / B2..B4)")
        g = groups
        self.groups = g
        self.feature_dim = feature_dim
        self.stem_bn = nn.BatchNorm2d(g * stem_channels)
        self.pool = nn.MaxPool2d(3, stride=pool_stride, padding=1)
        strides = (1, *stage_strides)
        blocks = []
        in_channels = stem_channels
        for index, (width, units, stride) in enumerate(zip(stage_widths, units_per_stage, strides, strict=True)):
            out_channels = 2 * width
            attention = None
            if intra_attention and index > 0:
                attention = AttentionPath(
                    in_channels, out_channels, stride, attention_pools[index - 1], g, **(attention_options or {})
                )
            stage = make_stage(in_channels, width, out_channels, units, stride, g)
            blocks.append(AttentionBlock(stage, attention, residual))
            in_channels = out_channels
        self.blocks = nn.ModuleList(blocks)
        self.out_channels = in_channels
        self.reduce = GroupedLinear(in_channels, feature_dim, g, bias=not reduce_bn)
        self.reduce_bn: nn.Module = nn.BatchNorm1d(g * feature_dim) if reduce_bn else nn.Identity()
        self.reduce_relu = reduce_relu
        self.dropout = nn.Dropout(dropout)
        self.classifier = GroupedLinear(feature_dim, num_classes, g)
        self.visibility_map = nn.Conv2d(g * in_channels, g, 1, groups=g) if visibility_map else None

    def reset_classifier(self, num_classes: int, std: float = 0.001) -> None:
        """Replaces the identity classifier by a fresh one with ``num_classes`` outputs."""
        device = self.classifier.weight.device
        self.classifier = GroupedLinear(self.feature_dim, num_classes, self.groups).to(device)
        nn.init.normal_(self.classifier.weight, std=std)

    def forward(self, stem: Tensor) -> BranchOutput:
        """Runs the branch on Conv1's (pre-BN) output ``(B, g*stem_channels, H, W)``."""
        x = self.pool(F.relu(self.stem_bn(stem), inplace=True))
        masks: list[Tensor] = []
        spatial: list[Tensor] = []
        for block in self.blocks:
            x, mask, spatial_map = block(x)
            if mask is not None:
                masks.append(mask)
            if spatial_map is not None:
                spatial.append(spatial_map)
        feature = self.reduce_bn(self.reduce(spatial_mean(x).flatten(1)))
        if self.reduce_relu:
            feature = F.relu(feature)
        logits = self.classifier(self.dropout(feature))
        visibility = scores = None
        if self.visibility_map is not None:
            scores = self.visibility_map(x).float()
            visibility = torch.sigmoid(scores).mean(dim=(2, 3)).to(feature.dtype)
        return BranchOutput(feature, logits, masks, spatial, visibility, scores)
