"""Fusion of the five branch features (Table 9): concatenation, an FC fusion layer, or inter-attention (Eq. 8-9).

All three take E_g (B, global_dim) and the four part features E_1..E_4 stacked as
(B, 4 * part_dim) and return the test-time feature, the fused identity logits (None for
concatenation, which has no fused classifier) and the part weights mu (inter-attention only).

Choices where the paper is silent:

- FC fusion: ``Linear (no bias) -> BatchNorm1d -> ReLU`` on the concatenation, output size
  ``fusion_dim`` (default: the concatenation's size, global_dim + 4 * part_dim = 768, so
  that Table 9's three rows compare features of the same dimension); dropout, then its own
  identity classifier.
- Inter-attention: the four FCs ``part_dim -> 1`` start near zero, so every mu starts at 0.5;
  its identity classifier takes [E_g, E_l] after dropout.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal, NamedTuple, TypeVar, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reid.models.blocks import GroupedLinear
from reid.names import PART_NAMES

#: how the part features and mu's logit are normalised: ``none`` (Eq. 8-9 as written), ``l2`` (unit-norm
#: part features) or ``l2_batch`` (``l2``, and mu's logit standardised over the batch by a BatchNorm1d)
InterNorm = Literal["none", "l2", "l2_batch"]
INTER_NORMS: tuple[str, ...] = get_args(InterNorm)
#: how mu weighs a part in the fused feature: ``residual`` (1 + mu_i, Eq. 9 as written: between 1x and 2x
#: the global feature's weight) or ``gate`` (2 mu_i: between 0 and 2x, so a hidden part can be switched
#: off; 1 at mu = 0.5, where the heads start)
InterWeight = Literal["residual", "gate"]
INTER_WEIGHTS: tuple[str, ...] = get_args(InterWeight)
#: where mu comes from: ``feature`` (Eq. 8 on the pooled part feature), ``map`` (the mean of a per-location
#: visibility score on the part's last feature map, computed by the part branch: VPM's region visibility) or
#: ``keypoints`` (the mean confidence of the joints that define the part, Eq. 1-2, given with the images:
#: PGFA's keypoint visibility; no parameters, nothing learned)
InterSource = Literal["feature", "map", "keypoints"]
INTER_SOURCES: tuple[str, ...] = get_args(InterSource)
NUM_PARTS = 4


class FusionOutput(NamedTuple):
    """Test-time feature, fused logits (or None) and part weights mu (B, 4) (or None)."""

    feature: Tensor
    logits: Tensor | None
    part_weights: Tensor | None


class Fusion(nn.Module):
    """The contract of a fusion: five branch features in, a :class:`FusionOutput` out.

    A fusion says how large its feature is (``out_dim``) and which of its columns are which
    branch's (:meth:`feature_slices`, read by Table 7's per-branch rows): nothing outside the
    fusion depends on its name. A new fusion is a subclass registered with
    :func:`register_fusion`, built by :meth:`build` from the network's options, plus its YAML
    (``model.net.fusion=<name>``) and its test.
    """

    out_dim: int
    #: the feature keeps ``[E_g, E_1..E_4]`` column blocks in place (possibly reweighted), so each
    #: branch's row of Table 7 can be read from it; False for a fusion that mixes the branches
    keeps_branch_columns: bool = True
    #: the fusion weighs the parts by the images' keypoint confidence, which its caller passes as
    #: ``part_visibility`` (``inter_source=keypoints``)
    needs_keypoints: bool = False
    #: the fusion has an identity classifier of its own (the fused loss of Eq. 11, weighed against the
    #: branch losses by lambda); False for a fusion applied only at test time
    has_fused_classifier: bool = True

    @classmethod
    def build(
        cls,
        *,
        global_dim: int,
        part_dim: int,
        num_classes: int,
        fusion_dim: int | None,
        dropout: float,
        inter_norm: str,
        inter_weight: str = "residual",
        inter_source: str = "feature",
    ) -> Fusion:
        """The fusion from the network's options (each fusion takes the ones it needs)."""
        raise NotImplementedError

    def feature_slices(self, global_dim: int, part_dim: int) -> dict[str, slice]:
        """Columns of the feature per Table 7 row: ``all``, and the branches' own when they are kept."""
        slices = {"all": slice(0, self.out_dim)}
        if not self.keeps_branch_columns:
            return slices
        slices["global"] = slice(0, global_dim)
        for index, name in enumerate(PART_NAMES):
            start = global_dim + index * part_dim
            slices[name] = slice(start, start + part_dim)
        slices["parts"] = slice(global_dim, self.out_dim)
        return slices


FUSION_REGISTRY: dict[str, type[Fusion]] = {}
_FusionT = TypeVar("_FusionT", bound=Fusion)


def register_fusion(name: str) -> Callable[[type[_FusionT]], type[_FusionT]]:
    """Registers a :class:`Fusion` subclass as ``model.net.fusion=<name>``."""

    def decorator(cls: type[_FusionT]) -> type[_FusionT]:
        FUSION_REGISTRY[name] = cls
        return cls

    return decorator


@register_fusion("concat")
class ConcatFusion(Fusion):
    """Concatenation at test time only: ``[E_g, E_1, ..., E_4]``; no parameters, no fused loss."""

    has_fused_classifier = False  # concatenation happens at test time only

    def __init__(self, global_dim: int, part_dim: int) -> None:
        super().__init__()
        self.out_dim = global_dim + NUM_PARTS * part_dim

    @classmethod
    def build(cls, *, global_dim: int, part_dim: int, **_: object) -> ConcatFusion:
        """The concatenation of the five features."""
        return cls(global_dim, part_dim)

    def forward(
        self, global_feature: Tensor, part_features: Tensor, part_visibility: Tensor | None = None
    ) -> FusionOutput:
        """Concatenates the five features."""
        return FusionOutput(torch.cat([global_feature, part_features], dim=1), None, None)


@register_fusion("fc")
class FCFusion(Fusion):
    """A conventional FC fusion layer on the concatenation, trained end to end with its own classifier.

    Args:
        global_dim: size of E_g.
        part_dim: size of each E_i.
        num_classes: identities of the fused classifier.
        fusion_dim: output size of the fusion layer (None: the concatenation's size).
        dropout: dropout before the fused classifier.
    """

    def __init__(
        self, global_dim: int, part_dim: int, num_classes: int, fusion_dim: int | None = None, dropout: float = 0.5
    ) -> None:
        super().__init__()
        in_dim = global_dim + NUM_PARTS * part_dim
        self.out_dim = fusion_dim or in_dim
        self.fc = nn.Linear(in_dim, self.out_dim, bias=False)
        self.bn = nn.BatchNorm1d(self.out_dim)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(self.out_dim, num_classes)

    keeps_branch_columns = False  # the fusion layer mixes the branches

    @classmethod
    def build(
        cls, *, global_dim: int, part_dim: int, num_classes: int, fusion_dim: int | None, dropout: float, **_: object
    ) -> FCFusion:
        """An FC fusion layer with its own classifier."""
        return cls(global_dim, part_dim, num_classes, fusion_dim, dropout)

    def forward(
        self, global_feature: Tensor, part_features: Tensor, part_visibility: Tensor | None = None
    ) -> FusionOutput:
        """The fused feature and its identity logits."""
        fused = self.relu(self.bn(self.fc(torch.cat([global_feature, part_features], dim=1))))
        return FusionOutput(fused, self.classifier(self.dropout(fused)), None)


@register_fusion("inter")
class InterAttentionFusion(Fusion):
    """Inter-attention (Eq. 8-9): ``mu_i = sigmoid(w_i . E_i + b_i)``, feature ``[E_g, (mu_i + 1) E_i]``.

    Args:
        global_dim: size of E_g (kept with weight 1, as in the paper).
        part_dim: size of each E_i.
        num_classes: identities of the fused classifier.
        dropout: dropout before the fused classifier.
        weight: ``residual`` ((1 + mu_i) E_i, Eq. 9) or ``gate`` (2 mu_i E_i; see :data:`INTER_WEIGHTS`).
        norm: ``none`` (Eq. 8-9 as written) or ``l2``: E_i enters both equations L2-normalised,
            ``mu_i = sigmoid(w_i . E_i / |E_i| + b_i)`` and ``(1 + mu_i) sqrt(d / 2) E_i / |E_i|``
            (``sqrt(d / 2)`` is the norm a BN-ReLU feature of size d has on average, so the
            fused feature keeps its scale). Why: E_i is a non-negative BN-ReLU output of norm
            ~sqrt(d / 2), so one SGD step on w_i moves every image's logit of mu_i together by
            about lr * d / 2 times the gradient (x3 at lr 0.05, d = 128): mu saturates at 0 or
            1 within a few dozen steps and stays there (tests/test_attention_health.py). With
            a unit-norm input the step is about lr times the gradient; and with the part's
            magnitude fixed, its weight in the fused feature is (1 + mu_i) alone, which the
            branch cannot take over by scaling E_i.
            ``l2_batch``: ``l2``, and the logit of mu goes through a BatchNorm1d (learned scale and
            shift) before the sigmoid. Why: with unit-norm inputs the logit ``w_i . E_i / |E_i|``
            varies across images only as far as the part features' directions differ, times
            ``|w_i|``, which weight decay keeps near 1: mu then hardly moves from one image to the
            next, whatever a visibility loss asks (``model.visibility_loss``). Standardised, the
            logit spreads over images from the first step, and the loss decides how far.
    """

    def __init__(
        self,
        global_dim: int,
        part_dim: int,
        num_classes: int,
        dropout: float = 0.5,
        norm: str = "none",
        weight: str = "residual",
        source: str = "feature",
    ) -> None:
        super().__init__()
        if source not in INTER_SOURCES:
            raise ValueError(f"inter-attention source must be one of {INTER_SOURCES}, got {source!r}")
        if norm not in INTER_NORMS:
            raise ValueError(f"inter-attention norm must be one of {INTER_NORMS}, got {norm!r}")
        if weight not in INTER_WEIGHTS:
            raise ValueError(f"inter-attention weight must be one of {INTER_WEIGHTS}, got {weight!r}")
        self.weight = weight
        self.part_dim = part_dim
        self.norm = norm
        self.out_dim = global_dim + NUM_PARTS * part_dim
        self.source = source
        self.needs_keypoints = source == "keypoints"
        # with source=map or keypoints, mu is given (the part branches' visibility map, the images' keypoint
        # confidence): no head of its own (DDP has no unused weights)
        self.part_weight = GroupedLinear(part_dim, 1, groups=NUM_PARTS) if source == "feature" else None
        self.logit_norm = nn.BatchNorm1d(NUM_PARTS) if norm == "l2_batch" and source == "feature" else None
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(self.out_dim, num_classes)

    @classmethod
    def build(
        cls,
        *,
        global_dim: int,
        part_dim: int,
        num_classes: int,
        dropout: float,
        inter_norm: str,
        inter_weight: str = "residual",
        inter_source: str = "feature",
        **_: object,
    ) -> InterAttentionFusion:
        """Inter-attention with its fused classifier."""
        return cls(global_dim, part_dim, num_classes, dropout, inter_norm, inter_weight, inter_source)

    def forward(
        self, global_feature: Tensor, part_features: Tensor, part_visibility: Tensor | None = None
    ) -> FusionOutput:
        """The adaptively weighted feature, its identity logits and mu.

        ``part_visibility`` (B, 4): taken as mu with ``source=map`` (the part branches' visible shares)
        or ``source=keypoints`` (the parts' mean keypoint confidence; NaN, an image without keypoints,
        counts as wholly visible); required then, ignored otherwise. The part weights use it
        without its gradient, so that only ``model.visibility_loss`` trains a visibility map.
        """
        parts = part_features.view(-1, NUM_PARTS, self.part_dim)
        if self.part_weight is None:
            if part_visibility is None:
                what = "keypoint confidence" if self.source == "keypoints" else "the part branches' visibility"
                raise ValueError(f"inter-attention with source={self.source} needs {what} (B, 4)")
            mu = part_visibility
            if self.source == "keypoints":
                mu = torch.nan_to_num(mu.to(parts.dtype), nan=1.0).clamp(0.0, 1.0)
            if self.norm != "none":
                parts = F.normalize(parts, dim=-1) * math.sqrt(self.part_dim / 2)
        elif self.norm in ("l2", "l2_batch"):
            unit = F.normalize(parts, dim=-1)
            logits = self.part_weight(unit.flatten(1))
            mu = torch.sigmoid(logits if self.logit_norm is None else self.logit_norm(logits))
            parts = unit * math.sqrt(self.part_dim / 2)
        else:
            mu = torch.sigmoid(self.part_weight(part_features))
        # a visibility map is a visibility estimate, trained by model.visibility_loss alone: the fused
        # identity loss would otherwise pull every part's weight down, whatever the part shows
        weight = mu.detach() if self.part_weight is None else mu
        gain = 2.0 * weight if self.weight == "gate" else 1.0 + weight
        weighted = parts * gain.unsqueeze(-1)
        fused = torch.cat([global_feature, weighted.flatten(1)], dim=1)
        return FusionOutput(fused, self.classifier(self.dropout(fused)), mu)


def make_fusion(
    fusion: str,
    global_dim: int,
    part_dim: int,
    num_classes: int,
    fusion_dim: int | None,
    dropout: float,
    inter_norm: str = "none",
    inter_weight: str = "residual",
    inter_source: str = "feature",
) -> Fusion:
    """The fusion registered as ``fusion`` (see :data:`FUSION_REGISTRY`)."""
    if fusion not in FUSION_REGISTRY:
        raise ValueError(f"fusion must be one of {tuple(FUSION_REGISTRY)}, got {fusion!r}")
    return FUSION_REGISTRY[fusion].build(
        global_dim=global_dim,
        part_dim=part_dim,
        num_classes=num_classes,
        fusion_dim=fusion_dim,
        dropout=dropout,
        inter_norm=inter_norm,
        inter_weight=inter_weight,
        inter_source=inter_source,
    )


#: the registered fusion names (``model.net.fusion``)
FUSIONS = tuple(FUSION_REGISTRY)
