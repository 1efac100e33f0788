"""Model size and cost (Table 12): parameter counts and multiply-accumulates of convolutions and linear layers.

MACs count convolutions and linear layers only (not BatchNorm, ReLU, pooling or additions);
identity classifiers are the modules named ``classifier``. The figures of every model and how
they compare with Table 12 are in docs/benchmarks.md ("Model size and cost"), printed by
``python -m reid.tools.summary model=<name>``.
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
        param.numel() for name, param in net.named_parameters() if not (exclude_classifier and _is_classifier(name))
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
