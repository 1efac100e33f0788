"""Names defined once: the five branches and four parts, and the metrics (keys of logs, metrics.json,
tables, pictures)."""

from __future__ import annotations

from typing import Literal, get_args

#: the five branches of Table 1, global first; the order of the network's outputs and of Table 7's rows
BRANCH_NAMES = ("global", "head", "upper_body", "upper_leg", "lower_leg")
#: the four body parts, in the order of the part crops, features and inter-attention weights mu
PART_NAMES = BRANCH_NAMES[1:]
#: the same parts as words, for picture titles and axes
PART_LABELS = tuple(name.replace("_", " ") for name in PART_NAMES)
#: the crops a model is fed: ``pose`` (placed by keypoints, Eq. 1-2) or ``strips`` (the baseline's fixed strips)
RegionMode = Literal["pose", "strips"]
REGION_MODES: tuple[str, ...] = get_args(RegionMode)
#: what a ReID evaluation reports (CMC ranks, mAP, mINP): metrics.json, logs (val/<name>) and tables
RANK_METRICS = ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP")
#: what ImageNet pre-training's validation reports
CLASSIFICATION_METRICS = ("top1", "top5")
#: where train.py keeps the resolved run config inside every checkpoint (plain containers)
CHECKPOINT_CONFIG_KEY = "reid_config"
#: written beside metrics.json by train and evaluate: the commit and thread count that produced it
PROVENANCE_FILE = "provenance.json"
