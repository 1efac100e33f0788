"""Crop the five region boxes out of an image and resize them, padding (not clipping) where a box leaves it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

import cv2
import numpy as np

#: Paper sizes (height, width): whole body 384x192, each part 96x192.
WHOLE_SIZE = (384, 192)
PART_SIZE = (96, 192)


def box_to_crop_matrix(box: np.ndarray | tuple[float, float, float, float], size: tuple[int, int]) -> np.ndarray:
    """The 2x3 affine matrix that maps box (x1, y1, x2, y2) of the source onto an output of `size` (h, w).

    Box coordinates are continuous (pixel i covers [i, i + 1)); OpenCV addresses pixel centres,
    hence the half-pixel shifts.  The box (0, 0, W, H) onto size (H, W) is the identity.
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    out_h, out_w = size
    scale_x = out_w / (x2 - x1)
    scale_y = out_h / (y2 - y1)
    return np.array(
        [
            [scale_x, 0.0, scale_x * (0.5 - x1) - 0.5],
            [0.0, scale_y, scale_y * (0.5 - y1) - 0.5],
        ],
        dtype=np.float64,
    )


def _border_value(image: np.ndarray, pad_value: str | float | tuple[float, float, float]) -> tuple[float, ...]:
    if isinstance(pad_value, str):
        if pad_value != "mean":
            raise ValueError(f"pad_value must be 'mean', a number or 3 numbers, got {pad_value!r}")
        mean = cv2.mean(image)  # per-channel mean, fast
        return tuple(float(v) for v in mean[:3])
    # numpy's isscalar guard (numpy scalar | complex | str | bytes | memoryview) narrows neither branch to this union
    if np.isscalar(pad_value):
        return (float(cast(float, pad_value)),) * 3
    values = tuple(float(v) for v in cast(Iterable[float], pad_value))
    if len(values) != 3:
        raise ValueError(f"pad_value must be 'mean', a number or 3 numbers, got {pad_value!r}")
    return values


def crop_regions(
    image: np.ndarray,
    boxes: np.ndarray,
    whole_size: tuple[int, int] = WHOLE_SIZE,
    part_size: tuple[int, int] = PART_SIZE,
    pad_value: str | float | tuple[float, float, float] = "mean",
    *,
    interpolation: int = cv2.INTER_LINEAR,
) -> tuple[np.ndarray, np.ndarray]:
    """Cut the whole-body box and the four part boxes out of `image`, resized, in one warp each.

    Parts of a box outside the image are filled with a constant (the paper is silent; padding
    keeps Eq. 2's geometry where clipping would stretch the body).  The default pad value is
    the image's channel mean, which becomes 0 after per-image mean subtraction, i.e. the
    padding is neutral for the network.  Bilinear interpolation; strong down-scaling would
    alias, but re-ID boxes are up-scaled to the paper sizes.

    Args:
        image: (H, W, 3) uint8.
        boxes: (5, 4) boxes (x1, y1, x2, y2) in pixels: whole body, then the four parts.
        whole_size: (height, width) of the whole-body crop.
        part_size: (height, width) of each part crop.
        pad_value: ``"mean"`` (the image's channel means), one number, or one per channel.
        interpolation: OpenCV interpolation flag.

    Returns:
        ``(whole, parts)``: (h0, w0, 3) and (4, h, w, 3) uint8.
    """
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        description = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"image must be an (H, W, 3) uint8 array, got {description}")
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.shape != (5, 4):
        raise ValueError(f"boxes must have shape (5, 4) (whole body + 4 parts, x1 y1 x2 y2), got {boxes.shape}")
    if not np.isfinite(boxes).all() or (boxes[:, 2] <= boxes[:, 0]).any() or (boxes[:, 3] <= boxes[:, 1]).any():
        raise ValueError(f"boxes must be finite with x2 > x1 and y2 > y1, got {boxes.tolist()}")
    border = _border_value(image, pad_value)

    def warp(box: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        return cv2.warpAffine(
            image,
            box_to_crop_matrix(box, size),
            (size[1], size[0]),
            flags=interpolation,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=border,
        )

    whole = warp(boxes[0], whole_size)
    parts = np.empty((4, part_size[0], part_size[1], 3), dtype=np.uint8)
    for i in range(4):
        parts[i] = warp(boxes[i + 1], part_size)
    return whole, parts
