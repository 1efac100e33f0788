"""Pictures of the five regions: a data set's images with their joints and boxes, drawn into one grid (Fig. 4c style).

The picture of a data set is ``python -m reid.tools.regions data=<name> n=16 [out=regions.png]``
(:mod:`reid.tools.regions`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from reid.data.io import read_image
from reid.pose import fill_missing_joints

log = logging.getLogger(__name__)

# whole body, head, upper body, upper leg, lower leg
REGION_COLOURS = ((255, 255, 255), (255, 64, 64), (64, 200, 64), (64, 128, 255), (255, 200, 0))
# limbs in OpenPose COCO-18 order, drawn as lines between joints
SKELETON = (
    (1, 2),
    (2, 3),
    (3, 4),
    (1, 5),
    (5, 6),
    (6, 7),
    (1, 8),
    (8, 9),
    (9, 10),
    (1, 11),
    (11, 12),
    (12, 13),
    (1, 0),
    (0, 14),
    (14, 16),
    (0, 15),
    (15, 17),
)


def draw_regions(
    image: np.ndarray,
    boxes: np.ndarray,
    keypoints: np.ndarray | None = None,
    *,
    min_conf: float = 0.1,
    scale: int = 3,
    pad: int = 24,
) -> Image.Image:
    """Draws the five boxes and the joints on an enlarged copy of ``image``.

    The canvas is padded by ``pad`` source pixels on each side, so boxes that leave the image
    (they are padded, not clipped, when cropping) stay visible. Confident joints are drawn
    filled, joints filled in from a canonical pose hollow.

    Args:
        image: (H, W, 3) uint8 RGB.
        boxes: (5, 4) boxes (x1, y1, x2, y2) in image pixels.
        keypoints: optional (18, 3) joints after canonical filling; ``min_conf`` tells which were confident.
        min_conf: confidence below which a joint counts as filled in.
        scale: enlargement factor.
        pad: margin around the image, in source pixels.
    """
    h, w = image.shape[:2]
    canvas = Image.new("RGB", ((w + 2 * pad) * scale, (h + 2 * pad) * scale), (40, 40, 40))
    canvas.paste(
        Image.fromarray(image).resize((w * scale, h * scale), Image.Resampling.NEAREST), (pad * scale, pad * scale)
    )
    draw = ImageDraw.Draw(canvas)

    def to_canvas(x: float, y: float) -> tuple[float, float]:
        return (x + pad) * scale, (y + pad) * scale

    for k, (box, colour) in enumerate(zip(boxes, REGION_COLOURS, strict=False)):
        x1, y1 = to_canvas(box[0], box[1])
        x2, y2 = to_canvas(box[2], box[3])
        inset = k  # keeps coinciding edges of neighbouring boxes apart
        draw.rectangle([x1 + inset, y1 + inset, x2 - inset, y2 - inset], outline=colour, width=2)
    if keypoints is not None:
        for a, b in SKELETON:
            if keypoints[a, 2] > 0 and keypoints[b, 2] > 0:
                draw.line([to_canvas(*keypoints[a, :2]), to_canvas(*keypoints[b, :2])], fill=(0, 255, 255), width=2)
        for x, y, conf in keypoints:
            if conf <= 0 and x == 0 and y == 0:
                continue
            cx, cy = to_canvas(x, y)
            r = 1.5 * scale
            if conf >= min_conf:
                draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(255, 0, 255))
            else:
                draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=(255, 0, 255), width=2)
    return canvas


def region_grid(tiles: Sequence[Image.Image], columns: int = 8) -> Image.Image:
    """Lays equally sized tiles out in a grid."""
    if not tiles:
        raise ValueError("no images to draw")
    tw, th = tiles[0].size
    rows = (len(tiles) + columns - 1) // columns
    grid = Image.new("RGB", (tw * min(columns, len(tiles)), th * rows), (20, 20, 20))
    for i, tile in enumerate(tiles):
        grid.paste(tile, ((i % columns) * tw, (i // columns) * th))
    return grid


def render(datamodule: object, n: int = 16, split: str = "train", seed: int = 0, columns: int = 8) -> Image.Image:
    """Draws ``n`` random images of a set-up data module with their joints and five boxes."""
    dataset = datamodule.train_set if split == "train" else datamodule.eval_set  # type: ignore[attr-defined]
    source = datamodule._keypoint_source(datamodule.dataset)  # type: ignore[attr-defined]
    min_conf = float(datamodule.pose["min_conf"])  # type: ignore[attr-defined]
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(dataset), size=min(n, len(dataset)), replace=False)
    tiles = []
    size = None
    for i in picks:
        record = dataset.records[i]
        image = read_image(record.image_path)
        keypoints = None
        if source is not None:
            keypoints = source.get(record.image_path, image_size=(image.shape[1], image.shape[0]))
            if keypoints is not None:
                filled, _ = fill_missing_joints(keypoints, min_conf=min_conf)
                keypoints = filled
        tile = draw_regions(image, dataset.boxes[i], keypoints, min_conf=min_conf)
        size = size or tile.size
        tiles.append(tile if tile.size == size else tile.resize(size))
    return region_grid(tiles, columns=columns)
