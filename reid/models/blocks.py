"""Building blocks of the branches: bottleneck units, grouped linear layers, the shared Conv1, weight init.

Every block takes *per-group* channel counts and a ``groups`` argument: with ``groups=4`` one
module holds four independent copies (the four part branches) side by side along the channel
axis, so that one grouped kernel runs all four. A grouped block is numerically the same as
four separate blocks whose weights are concatenated along the output-channel axis (dim 0);
:func:`reid.models.network.part_state_dict_to_grouped` relies on exactly that layout.
"""

from __future__ import annotations

import math
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def scaled_channels(channels: int, width: float) -> int:
    """``channels * width`` rounded to the nearest integer, at least 1."""
    return max(1, int(round(channels * width)))


def spatial_mean(x: Tensor) -> Tensor:
    """Mean over the h x w positions, ``(B, C, 1, 1)``: ``F.adaptive_avg_pool2d(x, 1)``, the same numbers.

    The difference is the backward pass. The mean's gradient is an expanded tensor divided by
    ``h * w``, and that division comes out in the dimension order of the tensor the mean was
    taken over: NCHW-contiguous for a channels_last ``x``, so that in a channels_last network
    every kernel behind it in the backward pass would mix memory formats (and take the slow
    path). A channels_last ``x`` is therefore averaged as its ``(B, h, w, C)`` view, which is
    the same memory reduced by the same kernel, and whose gradient comes out channels_last.
    """
    batch, channels = x.shape[:2]
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return x.permute(0, 2, 3, 1).mean(dim=(1, 2)).view(batch, channels, 1, 1)
    return x.mean(dim=(2, 3), keepdim=True)


class SharedStemConv(nn.Conv2d):
    """Conv1 of Table 1 (3x3, stride 2, no bias): one weight shared by the five branches.

    ``forward(x, groups=g)`` applies the same 3-channel kernel to ``g`` images stacked along
    the channel axis (input ``(B, 3g, H, W)``, output ``(B, 32g, H/2, W/2)``) by repeating the
    weight, so the four part crops go through one grouped convolution and gradients of all
    four reach the single shared weight.
    """

    def __init__(self, out_channels: int) -> None:
        super().__init__(3, out_channels, kernel_size=3, stride=2, padding=1, bias=False)

    def forward(self, x: Tensor, groups: int = 1) -> Tensor:
        """Convolves ``groups`` stacked 3-channel images with the shared kernel."""
        weight = self.weight if groups == 1 else self.weight.repeat(groups, 1, 1, 1)
        return F.conv2d(x, weight, None, self.stride, self.padding, self.dilation, groups)


class GroupedLinear(nn.Module):
    """``groups`` independent linear layers applied to ``groups`` consecutive feature slices.

    Input ``(B, groups * in_features)``, output ``(B, groups * out_features)``. The weight is
    stored as ``(groups * out_features, in_features)`` (like a grouped 1x1 convolution), so the
    weights of separate ``nn.Linear`` layers concatenate along dim 0 into it.

    Args:
        in_features: input size of each group.
        out_features: output size of each group.
        groups: number of independent layers.
        bias: learn an additive bias.
    """

    def __init__(self, in_features: int, out_features: int, groups: int = 1, bias: bool = True) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.groups = groups
        self.weight = nn.Parameter(torch.empty(groups * out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(groups * out_features)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def forward(self, x: Tensor) -> Tensor:
        """Applies each group's layer to its slice of ``x``."""
        if self.groups == 1:
            return F.linear(x, self.weight, self.bias)
        batch = x.shape[0]
        out = torch.einsum(
            "bgi,goi->bgo",
            x.reshape(batch, self.groups, self.in_features),
            self.weight.view(self.groups, self.out_features, self.in_features),
        ).reshape(batch, self.groups * self.out_features)
        return out if self.bias is None else out + self.bias

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"groups={self.groups}, bias={self.bias is not None}"
        )


class Bottleneck(nn.Module):
    """ResNet bottleneck unit ``1x1 mid -> 3x3 mid (stride) -> 1x1 out`` with BN, ReLU and a shortcut.

    The stride sits on the 3x3 convolution (the torchvision / "ResNet v1.5" convention); the
    shortcut is a strided 1x1 convolution + BN whenever the shape changes.

    Args:
        in_channels: input channels per group.
        mid_channels: bottleneck width per group.
        out_channels: output channels per group.
        stride: stride of the 3x3 convolution and of the projection shortcut.
        groups: number of independent copies side by side (4 for the grouped part branches).
    """

    def __init__(
        self, in_channels: int, mid_channels: int, out_channels: int, stride: int = 1, groups: int = 1
    ) -> None:
        super().__init__()
        g = groups
        self.conv1 = nn.Conv2d(g * in_channels, g * mid_channels, 1, bias=False, groups=g)
        self.bn1 = nn.BatchNorm2d(g * mid_channels)
        self.conv2 = nn.Conv2d(g * mid_channels, g * mid_channels, 3, stride=stride, padding=1, bias=False, groups=g)
        self.bn2 = nn.BatchNorm2d(g * mid_channels)
        self.conv3 = nn.Conv2d(g * mid_channels, g * out_channels, 1, bias=False, groups=g)
        self.bn3 = nn.BatchNorm2d(g * out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(g * in_channels, g * out_channels, 1, stride=stride, bias=False, groups=g),
                nn.BatchNorm2d(g * out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        """Residual unit output ``relu(F(x) + shortcut(x))``."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity  # in place: BatchNorm's backward does not need its output
        return self.relu(out)


def make_stage(
    in_channels: int, mid_channels: int, out_channels: int, num_units: int, stride: int, groups: int = 1
) -> nn.Sequential:
    """``num_units`` bottleneck units; the first one strides and changes the channel count."""
    units = [Bottleneck(in_channels, mid_channels, out_channels, stride, groups)]
    units += [Bottleneck(out_channels, mid_channels, out_channels, 1, groups) for _ in range(num_units - 1)]
    return nn.Sequential(*units)


def _fans(weight: Tensor, groups: int) -> tuple[int, int]:
    """(fan_in, fan_out) of one group of a conv / grouped-linear weight stored as (g*out, in, ...)."""
    receptive = weight[0, 0].numel() if weight.dim() > 2 else 1
    return weight.shape[1] * receptive, (weight.shape[0] // groups) * receptive


SMALL_INIT_NAMES = ("classifier", "part_weight", "visibility_map")
"""Layers initialised with a small normal: identity classifiers, the inter-attention FCs and visibility maps."""


def init_weights(module: nn.Module, classifier_std: float = 0.001, zero_init_residual: bool = False) -> None:
    """Initialises a network the way the field does.

    Convolutions and linear layers: Kaiming normal (fan_out, ReLU gain) computed *per group*,
    so a grouped layer gets the same distribution as its separate counterparts. BatchNorm:
    weight 1, bias 0. Layers named in :data:`SMALL_INIT_NAMES` (identity classifiers, and the
    inter-attention FCs so that every mu starts near 0.5): normal with ``classifier_std``,
    bias 0. With ``zero_init_residual`` the last BN of every bottleneck starts at 0, so each
    unit starts as its shortcut (Goyal et al. 2017). Modules with ``owns_init = True`` (the
    attention heads) get their own ``reset_parameters()`` last.
    """
    for name, sub in module.named_modules():
        is_classifier = name.split(".")[-1] in SMALL_INIT_NAMES
        if isinstance(sub, (nn.Conv2d, nn.Linear, GroupedLinear)):
            groups = getattr(sub, "groups", 1)
            if is_classifier:
                nn.init.normal_(sub.weight, std=classifier_std)
            else:
                _, fan_out = _fans(sub.weight, groups)
                nn.init.normal_(sub.weight, std=math.sqrt(2.0 / fan_out))
            if sub.bias is not None:
                nn.init.zeros_(sub.bias)
        elif isinstance(sub, (nn.BatchNorm1d, nn.BatchNorm2d)) and sub.affine:
            nn.init.ones_(sub.weight)
            nn.init.zeros_(sub.bias)
    if zero_init_residual:
        for sub in module.modules():
            if isinstance(sub, Bottleneck):
                nn.init.zeros_(sub.bn3.weight)
    for sub in module.modules():
        # modules whose init is part of their design (the attention heads) re-apply their own
        if getattr(sub, "owns_init", False):
            # Module.__getattr__ is typed Tensor | Module: the method is the module's own
            cast(Any, sub).reset_parameters()
