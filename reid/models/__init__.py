"""The network (plain torch.nn): five-branch attention-driven ReID model, its blocks, and a reference ResNet-50."""

from reid.models.complexity import count_macs, count_parameters
from reid.models.network import (
    BRANCH_NAMES,
    PART_NAMES,
    AttentionReIDNet,
    NetworkOutput,
    is_classifier_parameter,
    part_state_dict_to_grouped,
    part_state_dict_to_separate,
)
from reid.models.resnet import ResNet50

__all__ = [
    "BRANCH_NAMES",
    "PART_NAMES",
    "AttentionReIDNet",
    "NetworkOutput",
    "ResNet50",
    "count_macs",
    "count_parameters",
    "is_classifier_parameter",
    "part_state_dict_to_grouped",
    "part_state_dict_to_separate",
]
