"""Per-image truth of the synthetic set (where the person is, what an occluder hides), cut as the network's crops are.

The generator writes ``truth/<split folder>/<image stem>_truth.png`` beside the images: one
uint8 label per pixel of the image, 0 background, 1 the person's pixels that an occluder
hides, 2 the person's visible pixels (:data:`reid.data.synthetic.generator.TRUTH_DIR`). Any
data set laid out the same way gets the same figures; the others have no truth, and
nothing changes for them. Training never reads the truth: it is for measuring.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from reid.data.crops import box_to_crop_matrix
from reid.errors import ReidError

TRUTH_DIR = "truth"
TRUTH_SUFFIX = "_truth.png"
BACKGROUND, HIDDEN, VISIBLE = 0, 1, 2


class TruthFormatError(ReidError, ValueError):
    """A truth file that is not a label image of its image's size."""


def truth_path(image_path: str | Path) -> Path | None:
    """The truth file of ``<root>/<split>/<stem>.<ext>`` (``<root>/truth/<split>/<stem>_truth.png``), if
    there is one."""
    image = Path(image_path)
    candidate = image.parent.parent / TRUTH_DIR / image.parent.name / f"{image.stem}{TRUTH_SUFFIX}"
    return candidate if candidate.is_file() else None


def read_truth(path: str | Path, image_shape: tuple[int, int] | None = None) -> np.ndarray:
    """The labels of a truth file, (H, W) uint8 in {0, 1, 2}; checked against ``image_shape`` (H, W) when given.

    Raises:
        TruthFormatError: unreadable, not single-channel, labels outside {0, 1, 2} or the wrong size.
    """
    labels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if labels is None or labels.ndim != 2 or labels.dtype != np.uint8:
        raise TruthFormatError(f"{path}: not a single-channel 8-bit PNG of labels (0, 1, 2); regenerate the data set")
    if labels.max(initial=0) > VISIBLE:
        raise TruthFormatError(f"{path}: label {int(labels.max())} is not 0, 1 or 2; regenerate the data set")
    if image_shape is not None and labels.shape != tuple(image_shape):
        raise TruthFormatError(
            f"{path}: {labels.shape[0]}x{labels.shape[1]} labels for a {image_shape[0]}x{image_shape[1]} image; "
            "regenerate the data set"
        )
    return labels


def region_visibility(labels: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """The share of the person's pixels inside each box that no occluder hides.

    Args:
        labels: (H, W) truth labels.
        boxes: (5, 4) boxes (x1, y1, x2, y2), whole body then the four parts (Eq. 1-2);
            the part of a box outside the image holds no pixel.

    Returns:
        (5,) float32 in [0, 1]; NaN for a box that holds none of the person's pixels.
    """
    height, width = labels.shape
    shares = np.full(len(boxes), np.nan, dtype=np.float32)
    for i, (x1, y1, x2, y2) in enumerate(np.asarray(boxes, dtype=np.float64)):
        # pixel j covers [j, j + 1): it is inside when its centre is
        cols = slice(max(int(np.ceil(x1 - 0.5)), 0), min(int(np.ceil(x2 - 0.5)), width))
        rows = slice(max(int(np.ceil(y1 - 0.5)), 0), min(int(np.ceil(y2 - 0.5)), height))
        inside = labels[rows, cols]
        person = int(np.count_nonzero(inside))
        if person:
            shares[i] = np.count_nonzero(inside == VISIBLE) / person
    return shares


def crop_visible(
    labels: np.ndarray, boxes: np.ndarray, whole_size: tuple[int, int], part_size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """The visible person's coverage in each of the five crops, warped exactly as
    :func:`reid.data.crops.crop_regions` warps the image.

    Returns:
        ``(whole, parts)``: (h0, w0) and (4, h, w) float32 in [0, 1] (bilinear, 0 outside the image).
    """
    visible = (labels == VISIBLE).astype(np.float32)
    boxes = np.asarray(boxes, dtype=np.float64)

    def warp(box: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        return cv2.warpAffine(
            visible,
            box_to_crop_matrix(box, size),
            (size[1], size[0]),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0.0,
        )

    whole = warp(boxes[0], whole_size)
    parts = np.stack([warp(boxes[i + 1], part_size) for i in range(4)])
    return whole, parts
