"""Attention maps (Fig. 7): the intra-attention masks of blocks B2-B4 as heat maps over the whole-body crop."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import cv2
import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from reid.models.network import BRANCH_NAMES, PART_NAMES

BLOCK_NAMES = ("B2", "B3", "B4")
GLOBAL_BRANCH = BRANCH_NAMES[0]
TITLE_HEIGHT = 16
BACKGROUND = (30, 30, 30)
TILE_GAP = 4


def _to_numpy(x: object) -> np.ndarray:
    """A float64 numpy copy of an array or a (possibly CUDA, possibly grad-tracking) torch tensor."""
    if hasattr(x, "detach"):
        return x.detach().float().cpu().numpy().astype(np.float64)
    return np.asarray(x, dtype=np.float64)


def attention_map(mask: object) -> np.ndarray:
    """One image's attention mask as a 2-D map: (c, h, w) is averaged over channels, (1, h, w)
    and (h, w) are taken as they are. Accepts numpy arrays and torch tensors."""
    values = _to_numpy(mask)
    if values.ndim == 3:
        values = values.mean(axis=0)
    if values.ndim != 2:
        raise ValueError(f"an attention mask must be (c, h, w) or (h, w), got shape {values.shape}")
    return values


def normalise_map(heat: np.ndarray) -> np.ndarray:
    """Rescales a map to [0, 1] (min -> 0, max -> 1); a constant map becomes all zeros."""
    heat = np.asarray(heat, dtype=np.float64)
    low, high = float(heat.min()), float(heat.max())
    if not high > low:
        return np.zeros_like(heat)
    return (heat - low) / (high - low)


def overlay_heatmap(
    image: np.ndarray,
    heat: np.ndarray,
    *,
    alpha: float = 0.5,
    cmap: str = "jet",
    normalise: bool = True,
) -> np.ndarray:
    """Blends a colour-mapped heat map over an image.

    Args:
        image: (H, W, 3) uint8 RGB.
        heat: 2-D map of any size; it is resized (bilinear) to the image.
        alpha: weight of the heat colours (0 = image only, 1 = heat only).
        cmap: a matplotlib colormap name.
        normalise: rescale ``heat`` to [0, 1] first; otherwise it must already lie in [0, 1].

    Returns:
        (H, W, 3) uint8 RGB.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got {image.dtype} {image.shape}")
    heat = np.asarray(heat, dtype=np.float64)
    if heat.ndim != 2:
        raise ValueError(f"heat must be a 2-D map, got shape {heat.shape}")
    if normalise:
        heat = normalise_map(heat)
    heat = cv2.resize(heat.astype(np.float32), (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
    colours = matplotlib.colormaps[cmap](np.clip(heat, 0.0, 1.0))[..., :3] * 255.0
    blended = (1.0 - alpha) * image.astype(np.float64) + alpha * colours
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def parts_in_whole_crop(boxes: np.ndarray, whole_size: tuple[int, int]) -> np.ndarray:
    """The four part boxes in the pixel coordinates of the whole-body crop.

    The whole crop is box 0 warped to ``whole_size`` (see ``reid.data.crops.crop_regions``), so a
    point maps as ``x' = (x - x1_0) * w / (x2_0 - x1_0)`` and likewise in y (continuous coordinates).

    Args:
        boxes: (5, 4) image-space boxes (x1, y1, x2, y2): whole body, then the four parts.
        whole_size: (height, width) of the whole-body crop.

    Returns:
        (4, 4) float64 boxes (x1, y1, x2, y2) in whole-crop pixels (they may leave the crop).
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.shape != (5, 4):
        raise ValueError(f"boxes must have shape (5, 4) (whole body + 4 parts, x1 y1 x2 y2), got {boxes.shape}")
    x1, y1, x2, y2 = boxes[0]
    if not (x2 > x1 and y2 > y1):
        raise ValueError(f"the whole-body box must have x2 > x1 and y2 > y1, got {boxes[0].tolist()}")
    height, width = whole_size
    scale = np.array([width / (x2 - x1), height / (y2 - y1)] * 2)
    origin = np.array([x1, y1, x1, y1])
    return (boxes[1:] - origin) * scale


def fuse_part_maps(
    part_maps: Sequence[np.ndarray],
    part_boxes: np.ndarray,
    canvas_size: tuple[int, int],
    *,
    normalise_parts: bool = False,
) -> np.ndarray:
    """Places each part's 2-D map over its box on a whole-crop-sized canvas, for display.

    Each map is resized (bilinear) to its box, rounded to whole pixels, and clipped to the
    canvas; where boxes overlap (they do by beta) the larger value is kept. The paper is silent
    on how Fig. 7 fuses the parts; by default the maps keep their raw scale (masks of all parts
    are sigmoids, so comparable: the picture shows which part attends more), and pixels no box
    covers take the smallest placed value, so they show as "cold" rather than as an artificial
    minimum. ``normalise_parts`` rescales each part's map to [0, 1] first, which shows the
    structure within each part instead.

    Args:
        part_maps: four 2-D maps (head, upper body, upper leg, lower leg).
        part_boxes: (4, 4) boxes (x1, y1, x2, y2) in canvas pixels (``parts_in_whole_crop``).
        canvas_size: (height, width) of the canvas, the whole crop's size.
        normalise_parts: rescale each part's map to [0, 1] before placing it.

    Returns:
        (height, width) float64 map.
    """
    part_boxes = np.asarray(part_boxes, dtype=np.float64)
    if part_boxes.shape != (len(part_maps), 4):
        raise ValueError(f"part_boxes must have shape ({len(part_maps)}, 4), got {part_boxes.shape}")
    height, width = canvas_size
    canvas = np.full((height, width), -np.inf)
    for heat, box in zip(part_maps, part_boxes, strict=True):
        heat = normalise_map(heat) if normalise_parts else np.asarray(heat, dtype=np.float64)
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        if x2 <= x1 or y2 <= y1:
            continue
        resized = cv2.resize(heat.astype(np.float32), (x2 - x1, y2 - y1), interpolation=cv2.INTER_LINEAR)
        # the part of the box that lies on the canvas
        cx1, cy1, cx2, cy2 = max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)
        if cx2 <= cx1 or cy2 <= cy1:
            continue
        piece = resized[cy1 - y1 : cy2 - y1, cx1 - x1 : cx2 - x1]
        canvas[cy1:cy2, cx1:cx2] = np.maximum(canvas[cy1:cy2, cx1:cx2], piece)
    covered = np.isfinite(canvas)
    canvas[~covered] = canvas[covered].min() if covered.any() else 0.0
    return canvas


def display_image(x: object) -> np.ndarray:
    """An image ready to draw: (H, W, 3) uint8 passes through; a float image (3, H, W) or
    (H, W, 3), e.g. a normalised network input, is stretched to 0..255 per image (the
    mean-subtraction normalisation cannot be undone exactly, a stretch shows the same picture)."""
    if isinstance(x, np.ndarray) and x.dtype == np.uint8:
        if x.ndim != 3 or x.shape[2] != 3:
            raise ValueError(f"a uint8 image must be (H, W, 3), got {x.shape}")
        return x
    values = _to_numpy(x)
    if values.ndim == 3 and values.shape[0] == 3 and values.shape[2] != 3:
        values = values.transpose(1, 2, 0)
    if values.ndim != 3 or values.shape[2] != 3:
        raise ValueError(f"an image must be (3, H, W) or (H, W, 3), got shape {values.shape}")
    return np.rint(normalise_map(values) * 255.0).astype(np.uint8)


def _batch_maps(attention: Mapping[str, Sequence[object]], branch: str, count: int) -> list[np.ndarray]:
    """The three blocks' maps of one branch as (N, h, w) arrays (channel means)."""
    blocks = attention[branch]
    if len(blocks) != len(BLOCK_NAMES):
        raise ValueError(f"attention[{branch!r}] must hold {len(BLOCK_NAMES)} masks (B2, B3, B4), got {len(blocks)}")
    maps = []
    for block_name, masks in zip(BLOCK_NAMES, blocks, strict=True):
        if hasattr(masks, "detach"):
            masks = masks.detach().float()
            masks = masks.mean(1) if masks.dim() == 4 else masks  # reduce before leaving the device
        values = _to_numpy(masks)
        if values.ndim == 4:
            values = values.mean(axis=1)
        if values.ndim != 3 or values.shape[0] != count:
            raise ValueError(
                f"attention[{branch!r}] {block_name} must be (N, c, h, w) or (N, h, w) with N = {count} images, "
                f"got shape {values.shape}"
            )
        maps.append(values)
    return maps


def attention_picture(
    images: Sequence[object],
    attention: Mapping[str, Sequence[object]],
    part_boxes: np.ndarray | None = None,
    *,
    tile_height: int = 192,
    alpha: float = 0.5,
    cmap: str = "jet",
    normalise_parts: bool = False,
    health: Mapping[str, object] | None = None,
    outlines: Sequence[object | None] | None = None,
) -> Image.Image:
    """Fig. 7: one row per image: the image | global B2 | B3 | B4 | parts B2 | B3 | B4.

    Each heat map is the block's mask averaged over channels and normalised to [0, 1] on its
    own; the four parts are fused on the whole crop with ``fuse_part_maps``.

    Args:
        images: N whole-body crops, (H, W, 3) uint8 (or float images, see ``display_image``),
            all of one size.
        attention: ``NetworkOutput.attention``: branch name -> three masks (B2, B3, B4), each
            (N, c, h, w) (or (N, h, w)) for the N images, numpy or torch.
        part_boxes: (N, 4, 4) part boxes in whole-crop pixels (``parts_in_whole_crop``); None,
            or part branches missing from ``attention``, leaves out the parts columns.
        tile_height: displayed height of each tile (the width follows the crop's aspect).
        alpha: heat-map opacity.
        cmap: matplotlib colormap name.
        normalise_parts: rescale each part's map before fusing (see ``fuse_part_maps``).
        health: attention health figures (:class:`reid.metrics.attention_health.AttentionHealth`'s
            ``compute()``) to print under each block's title: saturation, mean m(1-m) and spatial
            std of that block over the evaluation's query images (parts: the mean of the four).
        outlines: per image, the truth's visible person as (H, W) coverage of the crop (0..1,
            or 0..255 as the loaders ship it), drawn as a white outline on every tile of the row;
            None (or None for an image) draws none.

    Returns:
        An RGB image with a title line over the columns.
    """
    pictures = [display_image(image) for image in images]
    if not pictures:
        raise ValueError("attention_picture needs at least one image")
    crop_h, crop_w = pictures[0].shape[:2]
    if any(p.shape[:2] != (crop_h, crop_w) for p in pictures):
        raise ValueError(f"all images must have one size, got {sorted({p.shape[:2] for p in pictures})}")
    if GLOBAL_BRANCH not in attention:
        raise ValueError(
            f"attention has no {GLOBAL_BRANCH!r} branch (keys {sorted(attention)}): "
            "was the model built with intra_attention and called with return_attention=True?"
        )
    count = len(pictures)
    global_maps = _batch_maps(attention, GLOBAL_BRANCH, count)
    with_parts = part_boxes is not None and all(name in attention for name in PART_NAMES)
    if with_parts:
        part_boxes = np.asarray(part_boxes, dtype=np.float64)
        if part_boxes.shape != (count, len(PART_NAMES), 4):
            raise ValueError(f"part_boxes must have shape ({count}, {len(PART_NAMES)}, 4), got {part_boxes.shape}")
        part_maps = {name: _batch_maps(attention, name, count) for name in PART_NAMES}

    titles = (
        ["image"] + [f"global {b}" for b in BLOCK_NAMES] + ([f"parts {b}" for b in BLOCK_NAMES] if with_parts else [])
    )
    if health:
        from reid.metrics.attention_health import block_caption

        captions = [block_caption(health, [GLOBAL_BRANCH], b.lower()) for b in BLOCK_NAMES]
        if with_parts:
            captions += [block_caption(health, PART_NAMES, b.lower()) for b in BLOCK_NAMES]
        titles = [titles[0]] + [t if c is None else f"{t}\n{c}" for t, c in zip(titles[1:], captions, strict=True)]
    title_height = TITLE_HEIGHT * max(title.count("\n") + 1 for title in titles)
    tile_w = max(1, int(round(crop_w * tile_height / crop_h)))
    gap = TILE_GAP
    canvas = Image.new(
        "RGB", (len(titles) * (tile_w + gap) - gap, title_height + count * (tile_height + gap)), BACKGROUND
    )
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for column, title in enumerate(titles):
        for line_number, line in enumerate(title.split("\n")):
            draw.text(
                (column * (tile_w + gap) + 2, 2 + line_number * TITLE_HEIGHT), line, fill=(230, 230, 230), font=font
            )

    for row, picture in enumerate(pictures):
        tiles = [picture]
        tiles += [overlay_heatmap(picture, maps[row], alpha=alpha, cmap=cmap) for maps in global_maps]
        if with_parts:
            assert part_boxes is not None  # with_parts implies it
            for block in range(len(BLOCK_NAMES)):
                fused = fuse_part_maps(
                    [part_maps[name][block][row] for name in PART_NAMES],
                    part_boxes[row],
                    (crop_h, crop_w),
                    normalise_parts=normalise_parts,
                )
                tiles.append(overlay_heatmap(picture, fused, alpha=alpha, cmap=cmap))
        outline = outlines[row] if outlines is not None and row < len(outlines) else None
        if outline is not None:
            tiles = [_draw_outline(tile, outline) for tile in tiles]
        y = title_height + row * (tile_height + gap)
        for column, tile in enumerate(tiles):
            canvas.paste(
                Image.fromarray(tile).resize((tile_w, tile_height), Image.Resampling.BILINEAR),
                (column * (tile_w + gap), y),
            )
    return canvas


def _draw_outline(tile: np.ndarray, coverage: object) -> np.ndarray:
    """``tile`` with the outline of the pixels where ``coverage`` is at least half, in white."""
    import cv2

    mask: np.ndarray = _to_numpy(coverage).astype(np.float32)
    if mask.max(initial=0.0) > 1.0:
        mask = mask / 255.0
    if mask.shape != tile.shape[:2]:
        mask = cv2.resize(mask, (tile.shape[1], tile.shape[0]), interpolation=cv2.INTER_LINEAR)
    contours, _ = cv2.findContours((mask >= 0.5).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    drawn = np.ascontiguousarray(tile.copy())
    cv2.drawContours(drawn, contours, -1, (255, 255, 255), 1)
    return drawn


def attention_picture_size(
    num_images: int, crop_size: tuple[int, int], *, with_parts: bool = True, tile_height: int = 192
) -> tuple[int, int]:
    """(width, height) of the ``attention_picture`` of ``num_images`` crops of ``crop_size`` (h, w)."""
    columns = 1 + len(BLOCK_NAMES) * (2 if with_parts else 1)
    tile_w = max(1, int(round(crop_size[1] * tile_height / crop_size[0])))
    return columns * (tile_w + TILE_GAP) - TILE_GAP, TITLE_HEIGHT + num_images * (tile_height + TILE_GAP)
