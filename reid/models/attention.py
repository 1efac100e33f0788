"""Intra-attention (paper §3.3, Fig. 5): the encoder-decoder attention path and the attention blocks B2..B4.

A block has two paths on its input ``v``: the feature path ``a = F(v)`` (the stage's stacked
bottleneck units, Eq. 3) and the attention path ``m = M(v)`` (Eq. 4) with the shape of ``a``.
The block returns ``(1 + m) * a`` (residual attention, Eq. 7) or ``m * a`` (Eq. 5).

Choices where the paper is silent (all keyword options of :class:`AttentionPath`):

- **Matching a's resolution.** The attention path starts with an *entry* bottleneck unit that
  has the stage's stride and maps the input channels to the stage's output channels, so its
  output already has a's shape (h x w x c). The encoder-decoder then works at that resolution.
- **Encoder-decoder.** ``num_pools`` levels (2 in B2, 1 in B3 and B4, as the paper says); each
  level is ``3x3 max-pool stride 2 -> one bottleneck unit``; the decoder mirrors it with
  ``up-sample to the skip's size -> add the skip (the encoder feature at that resolution) ->
  one bottleneck unit``. The skip is the identity (the paper: "element-wise addition").
- **Lightness.** The attention units are bottlenecks of width ``c * bottleneck_ratio``
  (default 1/4, the ResNet expansion; the feature path uses c/2 as in Table 1). With these
  defaults the full model's size and cost land close to Table 12 (see ``complexity.py``).
- **Up-sampling**: bilinear (``align_corners=False``); ``upsample_mode="nearest"`` is the
  alternative.
- **Decomposed head** (§3.3.2): ``S = conv_kxk(A)`` with one output channel (k = 3 by default),
  ``C = conv(avgpool(A))`` and ``m = sigmoid(conv1x1(S * C))``. The paper states that the
  decomposition *reduces* the parameter count; with a single c x c channel convolution it
  would not (c^2 + 10c against the c^2 + c of the undecomposed 1x1 head), so the channel
  convolution is a squeeze-excitation pair ``c -> c/r -> c`` with ReLU between (r = 16, as in
  SE-Net); ``channel_reduction=1`` gives the single c x c convolution. The final 1x1
  convolution is depthwise (a per-channel scale and bias): a full 1x1 convolution applied to
  the rank-one tensor ``S * C`` equals ``S * (W C)``, i.e. it would only re-parametrise C.
- **Undecomposed head** (Table 8): ``m = sigmoid(conv1x1(A))`` with c output channels.
- **Keeping the sigmoid alive** (``norm``, ``model.net.attention_norm``). The logit of the
  literal head, ``w * S * C``, is a product of three unbounded terms; with the network's
  Kaiming fan-out init (std sqrt(2) on the fan-out-1 depthwise convolution) most of the mask
  entries start outside [0.01, 0.99], and even from a healthy init training drives the literal
  head into saturation (the measured shares: docs/experiments.md). ``standardize``
  (the default) standardises S over the positions of each image, as the Residual Attention
  Network's spatial attention does, and gates C with a sigmoid, as SE-Net does, so the
  product is bounded and the depthwise convolution is a per-channel temperature; the
  undecomposed head gets a GroupNorm on its logits. ``batch`` puts a BatchNorm on the logits
  instead; ``none`` is the literal head. Every head initialises itself
  (:meth:`DecomposedAttentionHead.reset_parameters`): mask entries start near 0.5 with a
  spread of about 0.2 at every width (tests/test_attention_health.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal, NamedTuple, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reid.models.blocks import Bottleneck, spatial_mean

UpsampleMode = Literal["bilinear", "nearest"]
UPSAMPLE_MODES: tuple[str, ...] = get_args(UpsampleMode)


def match_memory_format(tensor: Tensor, reference: Tensor) -> Tensor:
    """``tensor`` in the memory format of ``reference`` (channels_last or contiguous).

    Broadcast products such as ``S * C`` come out NCHW-contiguous even when the network runs
    in channels_last; converting once here keeps every following kernel on the fast path.
    """
    if reference.is_contiguous(memory_format=torch.channels_last) and not reference.is_contiguous():
        return tensor.contiguous(memory_format=torch.channels_last)
    return tensor.contiguous()


#: How an attention head keeps its logits in the sigmoid's working range (see the heads).
AttentionNorm = Literal["standardize", "batch", "none"]
ATTENTION_NORMS: tuple[str, ...] = get_args(AttentionNorm)
#: Initial logit scale of the literal (``norm="none"``) heads, whose product S * C has no fixed
#: scale: chosen so that their masks start unsaturated at every width (tests/test_attention_health.py).
LITERAL_LOGIT_GAIN = 0.1


def standardize(tensor: Tensor, dims: tuple[int, ...], eps: float = 1e-3) -> Tensor:
    """``(x - mean) / std`` over ``dims``, separately for every other index (per image, no running statistics).

    ``eps`` is relative to the unit scale the inputs start at: a map that is (nearly) constant
    comes out (nearly) zero without a large gradient.
    """
    mean = tensor.mean(dim=dims, keepdim=True)
    var = tensor.var(dim=dims, keepdim=True, unbiased=False)
    return (tensor - mean) * torch.rsqrt(var + eps)


def _fan_in_normal_(conv: nn.Conv2d, gain: float = 1.0) -> None:
    """Normal init with std ``gain / sqrt(fan_in)`` (fan-in per group) and zero bias: unit-scale outputs."""
    fan_in = conv.weight.shape[1] * conv.weight.shape[2] * conv.weight.shape[3]
    nn.init.normal_(conv.weight, std=gain / math.sqrt(fan_in))
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


class AttentionMaps(NamedTuple):
    """What an attention head produces: the mask ``m`` in [0, 1] and the raw spatial map ``S`` (decomposed only)."""

    mask: Tensor
    spatial: Tensor | None


class DecomposedAttentionHead(nn.Module):
    """``m = sigmoid(dwconv1x1(S * C))``, ``S = conv_kxk(A)`` (h x w x 1), ``C = SE(avgpool(A))`` (1 x 1 x c).

    Args:
        channels: c, channels of A per group.
        groups: independent heads side by side (4 for the grouped part branches).
        spatial_kernel: kernel size of the spatial convolution.
        channel_reduction: r of the channel squeeze-excitation ``c -> max(4, c // r) -> c``;
            1 = a single c x c convolution.
        norm: how the logit is kept in the sigmoid's working range (:data:`ATTENTION_NORMS`):
            ``standardize`` standardises S over the h x w positions of each image (as the
            Residual Attention Network's spatial attention does) and gates C with a sigmoid
            (as SE-Net does), so ``|S * C|`` has unit scale at most and C decides, per image,
            how much of the spatial pattern each channel takes; ``batch`` puts a BatchNorm (no
            affine) on the product; ``none`` is the paper's literal head. The depthwise 1x1
            convolution after it is a learnable per-channel temperature and bias in every case.
    """

    owns_init = True  # init_weights leaves this init alone

    def __init__(
        self,
        channels: int,
        groups: int = 1,
        spatial_kernel: int = 3,
        channel_reduction: int = 16,
        norm: str = "standardize",
    ) -> None:
        super().__init__()
        if spatial_kernel < 1 or spatial_kernel % 2 == 0:
            raise ValueError(f"attention spatial_kernel must be a positive odd number, got {spatial_kernel}")
        if norm not in ATTENTION_NORMS:
            raise ValueError(f"attention norm must be one of {ATTENTION_NORMS}, got {norm!r}")
        g, c = groups, channels
        self.channels = c
        self.groups = g
        self.norm = norm
        self.spatial = nn.Conv2d(g * c, g, spatial_kernel, padding=spatial_kernel // 2, groups=g)
        if channel_reduction <= 1:
            self.channel: nn.Module = nn.Conv2d(g * c, g * c, 1, groups=g)
        else:
            hidden = max(4, c // channel_reduction)
            self.channel = nn.Sequential(
                nn.Conv2d(g * c, g * hidden, 1, groups=g),
                nn.ReLU(inplace=True),
                nn.Conv2d(g * hidden, g * c, 1, groups=g),
            )
        self.product_norm: nn.Module = nn.BatchNorm2d(g * c, affine=False) if norm == "batch" else nn.Identity()
        self.logit_conv = nn.Conv2d(g * c, g * c, 1, groups=g * c)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Starts every mask entry near 0.5 with a modest spread (the paper is silent on this).

        S and C get a fan-in normal init (unit-scale outputs; ReLU gain inside the
        squeeze-excitation). With ``standardize`` the product is a unit-variance spatial map
        times a gate near 0.5, so the per-channel temperature starts at 2; with ``batch`` the
        product is normalised to unit variance and the temperature starts at 1: either way the
        logits start ~ N(0, 1), i.e. mask entries spread around 0.5 with std ~0.2 and none
        saturated. The literal head has no such scale, so its temperature starts at
        :data:`LITERAL_LOGIT_GAIN`. The network's Kaiming fan-out
        init would give the depthwise and spatial convolutions (fan-out 1 and k^2) a std of
        sqrt(2) and more: a saturated sigmoid from the first step.
        """
        _fan_in_normal_(self.spatial)
        convs = [sub for sub in self.channel.modules() if isinstance(sub, nn.Conv2d)]
        for index, conv in enumerate(convs):
            _fan_in_normal_(conv, gain=math.sqrt(2.0) if index < len(convs) - 1 else 1.0)
        gain = {"standardize": 2.0, "batch": 1.0}.get(self.norm, LITERAL_LOGIT_GAIN)
        nn.init.constant_(self.logit_conv.weight, gain)
        assert self.logit_conv.bias is not None  # built with bias=True
        nn.init.zeros_(self.logit_conv.bias)

    def forward(self, initial: Tensor) -> AttentionMaps:
        """Attention mask (B, g*c, h, w) and spatial map S (B, g, h, w) from the initial confidence A."""
        batch, _, height, width = initial.shape
        spatial = self.spatial(initial)
        channel = self.channel(spatial_mean(initial)).reshape(batch, self.groups, self.channels, 1, 1)
        factor = spatial
        if self.norm == "standardize":
            factor = standardize(spatial, (2, 3))
            channel = torch.sigmoid(channel)
        product = factor.reshape(batch, self.groups, 1, height, width) * channel
        product = match_memory_format(product.reshape(batch, self.groups * self.channels, height, width), initial)
        return AttentionMaps(torch.sigmoid(self.logit_conv(self.product_norm(product))), spatial)


class FullAttentionHead(nn.Module):
    """Undecomposed attention (Table 8): ``m = sigmoid(conv1x1(A))``, a full h x w x c mask.

    Args:
        channels: c, channels of A (and of m) per group.
        groups: independent heads side by side.
        norm: ``standardize`` = a GroupNorm over each head's c x h x w logits per image (one
            group per head) with a per-channel affine; ``batch`` = a BatchNorm2d on the logits;
            ``none`` = the literal head. The affine starts at scale 1, bias 0.
    """

    owns_init = True  # init_weights leaves this init alone

    def __init__(self, channels: int, groups: int = 1, norm: str = "standardize") -> None:
        super().__init__()
        if norm not in ATTENTION_NORMS:
            raise ValueError(f"attention norm must be one of {ATTENTION_NORMS}, got {norm!r}")
        self.norm = norm
        self.logit_conv = nn.Conv2d(groups * channels, groups * channels, 1, groups=groups)
        self.logit_norm: nn.Module = nn.Identity()
        if norm == "standardize":
            self.logit_norm = nn.GroupNorm(groups, groups * channels)
        elif norm == "batch":
            self.logit_norm = nn.BatchNorm2d(groups * channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Fan-in init (the literal head scaled by :data:`LITERAL_LOGIT_GAIN`); the norm's affine at 1 and 0."""
        _fan_in_normal_(self.logit_conv, gain=1.0 if self.norm != "none" else LITERAL_LOGIT_GAIN)
        for sub in self.logit_norm.modules():
            if isinstance(sub, (nn.GroupNorm, nn.BatchNorm2d)) and sub.affine:
                nn.init.ones_(sub.weight)
                nn.init.zeros_(sub.bias)

    def forward(self, initial: Tensor) -> AttentionMaps:
        """Attention mask (B, g*c, h, w); no spatial map."""
        return AttentionMaps(torch.sigmoid(self.logit_norm(self.logit_conv(initial))), None)


class AttentionPath(nn.Module):
    """The attention path M of a block: entry unit, encoder-decoder (Fig. 5), attention head.

    Args:
        in_channels: channels of the block input v per group.
        out_channels: channels of a (and of m) per group.
        stride: the stage's stride; the entry unit applies it so that m matches a.
        num_pools: max-pooling steps of the encoder (2 in B2, 1 in B3 and B4).
        groups: independent paths side by side (4 for the grouped part branches).
        decompose: spatial x channel head (§3.3.2) or the full 1x1 head (Table 8).
        bottleneck_ratio: width of the attention units relative to ``out_channels``.
        spatial_kernel: kernel of the spatial convolution S.
        channel_reduction: squeeze ratio of the channel convolution C (1 = one c x c conv).
        upsample_mode: ``bilinear`` or ``nearest``.
        norm: how the head bounds its logits (:data:`ATTENTION_NORMS`).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        num_pools: int,
        groups: int = 1,
        *,
        decompose: bool = True,
        bottleneck_ratio: float = 0.25,
        spatial_kernel: int = 3,
        channel_reduction: int = 16,
        upsample_mode: str = "bilinear",
        norm: str = "standardize",
    ) -> None:
        super().__init__()
        if upsample_mode not in UPSAMPLE_MODES:
            raise ValueError(f"attention upsample_mode must be one of {UPSAMPLE_MODES}, got {upsample_mode!r}")
        if num_pools < 0:
            raise ValueError(f"attention num_pools must be >= 0, got {num_pools}")
        mid = max(1, int(round(out_channels * bottleneck_ratio)))
        self.upsample_mode = upsample_mode
        self.entry = Bottleneck(in_channels, mid, out_channels, stride, groups)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.encoder = nn.ModuleList(Bottleneck(out_channels, mid, out_channels, 1, groups) for _ in range(num_pools))
        self.decoder = nn.ModuleList(Bottleneck(out_channels, mid, out_channels, 1, groups) for _ in range(num_pools))
        self.head: nn.Module = (
            DecomposedAttentionHead(out_channels, groups, spatial_kernel, channel_reduction, norm)
            if decompose
            else FullAttentionHead(out_channels, groups, norm)
        )

    def initial_confidence(self, x: Tensor) -> Tensor:
        """A: the encoder-decoder output at a's resolution."""
        hidden = self.entry(x)
        skips = []
        for unit in self.encoder:
            skips.append(hidden)
            hidden = unit(self.pool(hidden))
        for unit, skip in zip(self.decoder, reversed(skips), strict=True):
            kwargs = {"align_corners": False} if self.upsample_mode == "bilinear" else {}
            upsampled = F.interpolate(hidden, size=skip.shape[-2:], mode=self.upsample_mode, **kwargs)
            hidden = unit(upsampled + skip)
        return hidden

    def forward(self, x: Tensor) -> AttentionMaps:
        """The mask m (same shape as a) and, when decomposed, the spatial map S."""
        return self.head(self.initial_confidence(x))


KNOCKOUTS = ("spatial", "channel")


@contextmanager
def attention_knockout(net: nn.Module, mode: str) -> Iterator[nn.Module]:
    """Within the block, every intra-attention mask loses its variation over positions or channels.

    ``spatial`` replaces m by its mean over h x w (per image and channel), ``channel`` by its
    mean over the channels (per image and position). The mean of m is kept, so the change in
    retrieval accuracy measures how much the network relies on *where* (or *which channels*)
    it attends, not on the average gain. Measurement only (evaluate.py ``eval.attention_knockout``).
    """
    if mode not in KNOCKOUTS:
        raise ValueError(f"attention knockout must be one of {KNOCKOUTS}, got {mode!r}")
    blocks = [block for block in net.modules() if isinstance(block, AttentionBlock) and block.attention is not None]
    for block in blocks:
        block.knockout = mode
    try:
        yield net
    finally:
        for block in blocks:
            block.knockout = None


class BlockOutput(NamedTuple):
    """A block's output v_{i+1}, its attention mask m_i and spatial map S_i (None where absent)."""

    features: Tensor
    mask: Tensor | None
    spatial: Tensor | None


class AttentionBlock(nn.Module):
    """A stage B_i: the feature path (stacked bottlenecks) and an optional attention path.

    Args:
        units: the feature path F (Eq. 3).
        attention: the attention path M (Eq. 4), or None for a plain stage (B1, or no intra-attention).
        residual: output ``(1 + m) * a`` (Eq. 7) if True, else ``m * a`` (Eq. 5).
    """

    def __init__(self, units: nn.Sequential, attention: AttentionPath | None = None, residual: bool = True) -> None:
        super().__init__()
        self.units = units
        self.attention = attention
        self.residual = residual
        # a measurement switch (attention_knockout), never set during training
        self.knockout: str | None = None

    def forward(self, x: Tensor) -> BlockOutput:
        """Applies the feature path and, when present, re-weights it with the attention mask."""
        features = self.units(x)
        if self.attention is None:
            return BlockOutput(features, None, None)
        mask, spatial = self.attention(x)
        if self.knockout == "spatial":
            mask = mask.mean(dim=(2, 3), keepdim=True).expand_as(mask)
        elif self.knockout == "channel":
            mask = mask.mean(dim=1, keepdim=True).expand_as(mask)
        weights = 1.0 + mask if self.residual else mask
        # features first, so the product keeps the feature path's memory format
        return BlockOutput(features * weights, mask, spatial)
