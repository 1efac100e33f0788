"""Model size and cost (Table 12): parameter counts and multiply-accumulates of convolutions and linear layers.

Our numbers at the paper's input sizes (whole 384x192, parts 96x192), 751 classes (Market-1501),
default options; "no cls" leaves out the identity classifiers:

==========================  ==========  ==========  ========  ===============================
model                       params      no cls      GMACs     Table 12
==========================  ==========  ==========  ========  ===============================
baseline / aligned          7,847,627   7,267,104   2.055     base model 6.8 M, 2.26 G
intra                       10,519,042  9,938,519   2.562
inter                       8,425,662   7,267,620   2.055
intra_inter (full)          11,097,077  9,939,035   2.563     full model 10.4 M, 2.69 G
fc fusion                   9,016,506   7,858,464   2.056
intra, not decomposed       11,091,403  10,510,880  2.725     (Table 8's alternative)
ResNet-50, 224x224          25,557,032  23,508,032  4.089     23.5 M, 5.58 G
ResNet-50, 384x192          (same)      (same)      6.008
==========================  ==========  ==========  ========  ===============================

Why they differ from Table 12:

- Base model, parameters: 7.27 M without classifiers (+7 % on 6.8 M), 7.85 M with them
  (+15 %). The paper does not say whether its count includes the classifiers (0.58 M here)
  or how it builds the shortcuts; ours are ResNet projection shortcuts (1x1 conv + BN)
  wherever a unit changes shape, 0.35 M in all: without them and without the classifiers the
  count is 6.92 M, within 2 % of 6.8 M. The tests accept 10 % without classifiers.
- Base model, cost: 2.06 G MACs against "2.26e9 FLOPs" (-9 %). The paper's count most likely
  also includes BatchNorm, ReLU, pooling and additions, which we leave out.
- Full model: intra-attention adds 2.67 M parameters and 0.51 G MACs here, inter-attention
  0.58 M (its 768 -> 751 classifier; the four mu FCs are 516 parameters); the paper's full
  model adds 3.6 M and 0.43 G. The attention path's width (``attention_bottleneck_ratio``)
  and the SE squeeze (``attention_channel_reduction``) were chosen to land in this range.
- ResNet-50 matches torchvision (25,557,032 / 4.089 G at 224x224); Table 12's 23.5 M is the
  count without the 1000-way classifier, its 5.58 G matches neither 224x224 nor 384x192.

Regenerate with::

    python -c "from reid.models import build_variant, count_parameters, count_macs; \
        net = build_variant('intra_inter', 751); print(count_parameters(net), count_macs(net))"
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from reid.models.blocks import GroupedLinear


def _is_classifier(name: str) -> bool:
    return "classifier" in name.split(".")


def count_parameters(net: nn.Module, exclude_classifier: bool = False) -> int:
    """Number of parameters of ``net``; with ``exclude_classifier``, without the identity classifiers.

    Classifiers are the modules named ``classifier`` (the convention of every model in reid.models).
    """
    return sum(
        param.numel()
        for name, param in net.named_parameters()
        if not (exclude_classifier and _is_classifier(name))
    )


def _layer_macs(module: nn.Module, output: Tensor) -> int:
    """Multiply-accumulates of one call of a conv / linear layer (its output already includes the batch)."""
    if isinstance(module, nn.Conv2d):
        # Per output element: (in_channels / groups) * kh * kw products; grouped convs are thus exact.
        return output.numel() * module.weight[0].numel()
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    if isinstance(module, GroupedLinear):
        return output.numel() * module.in_features
    return 0


@torch.no_grad()
def count_macs(
    net: nn.Module,
    whole_size: tuple[int, int] = (384, 192),
    part_size: tuple[int, int] | None = (96, 192),
) -> int:
    """Multiply-accumulates of all convolutions and linear layers for one sample, in eval mode.

    Counted with forward hooks on ``nn.Conv2d`` (including the shared Conv1, which runs once on
    the whole body and once, grouped, on the four parts), ``nn.Linear`` and ``GroupedLinear``.
    BatchNorm, activations, pooling, up-sampling and the attention products are not counted
    (they are a few per cent at most).

    Args:
        net: the model; called as ``net(whole, parts)``, or ``net(whole)`` when ``part_size`` is None.
        whole_size: (H, W) of the whole-body input.
        part_size: (h, w) of each of the four part inputs, or None for single-input models.

    Returns:
        the MAC count (batch 1).
    """
    total = 0

    def hook(module: nn.Module, inputs: tuple, output: Tensor) -> None:
        nonlocal total
        total += _layer_macs(module, output)

    handles = [
        module.register_forward_hook(hook)
        for module in net.modules()
        if isinstance(module, (nn.Conv2d, nn.Linear, GroupedLinear))
    ]
    was_training = net.training
    net.eval()
    try:
        param = next(net.parameters())
        whole = torch.zeros(1, 3, *whole_size, device=param.device)
        if part_size is None:
            net(whole)
        else:
            net(whole, torch.zeros(1, 4, 3, *part_size, device=param.device))
    finally:
        for handle in handles:
            handle.remove()
        net.train(was_training)
    return total
