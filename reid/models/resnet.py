"""A standard ResNet-50 (torchvision-equivalent layout, no torchvision needed) for size and speed comparisons."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from reid.models.blocks import init_weights, make_stage


class ResNet50(nn.Module):
    """ResNet-50 (He et al. 2016) as in torchvision: 7x7/2 stem, [3, 4, 6, 3] bottlenecks, stride on the 3x3.

    It has 23,508,032 parameters without its classifier (named ``classifier``, torchvision's
    ``fc``), 25,557,032 with a 1000-way one, matching torchvision's ``resnet50``.

    Args:
        num_classes: outputs of the classifier.
    """

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        stages = []
        in_channels = 64
        for width, units, stride in zip((64, 128, 256, 512), (3, 4, 6, 3), (1, 2, 2, 2), strict=True):
            stages.append(make_stage(in_channels, width, 4 * width, units, stride))
            in_channels = 4 * width
        self.layers = nn.Sequential(*stages)
        self.classifier = nn.Linear(in_channels, num_classes)
        init_weights(self, classifier_std=0.01)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits of images (B, 3, H, W)."""
        x = self.maxpool(F.relu(self.bn1(self.conv1(x)), inplace=True))
        x = F.adaptive_avg_pool2d(self.layers(x), 1).flatten(1)
        return self.classifier(x)
