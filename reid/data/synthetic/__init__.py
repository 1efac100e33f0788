"""Procedural pedestrian data set in the Market-1501 layout, with exact COCO-18 keypoints, for tests and
quick experiments."""

from reid.data.synthetic.generator import (
    COMPLETE_MARKER,
    MARKET_NAME_PATTERN,
    DatasetPlan,
    ImageJob,
    RenderedImage,
    SyntheticParams,
    generate,
    plan_dataset,
    render_image,
    render_sample,
)
from reid.data.synthetic.identities import PART_ATTRIBUTES, IdentitySpec, differing_parts

__all__ = [
    "COMPLETE_MARKER",
    "MARKET_NAME_PATTERN",
    "PART_ATTRIBUTES",
    "DatasetPlan",
    "IdentitySpec",
    "ImageJob",
    "RenderedImage",
    "SyntheticParams",
    "differing_parts",
    "generate",
    "plan_dataset",
    "render_image",
    "render_sample",
]
