"""Pose-aligned body regions (paper Eq. 1-2), the baseline's fixed strips, and the fallback between them."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any, Literal, NamedTuple, get_args

import numpy as np

from reid.pose.canonical import DEFAULT_MIN_JOINTS, fill_missing_joints, load_canonical_poses
from reid.pose.readers import DEFAULT_MIN_CONF, NUM_JOINTS

logger = logging.getLogger(__name__)

# Joint groups in OpenPose COCO-18 indices (paper numbering K1..K18 in the comments).
#: P0: all 18 joints (whole body).
P0_WHOLE_BODY: tuple[int, ...] = tuple(range(NUM_JOINTS))
#: P1 = K1..K8: nose, r-eye, l-eye, r-ear, l-ear, neck, r-shoulder, l-shoulder (head).
P1_HEAD: tuple[int, ...] = (0, 14, 15, 16, 17, 1, 2, 5)
#: P2 = K6..K14: neck, r/l-shoulder, r/l-elbow, r/l-wrist, r/l-hip (upper body).
P2_UPPER_BODY: tuple[int, ...] = (1, 2, 5, 3, 6, 4, 7, 8, 11)
#: P3 = K13..K16: r/l-hip, r/l-knee (upper leg).
P3_UPPER_LEG: tuple[int, ...] = (8, 11, 9, 12)
#: P4 = K15..K18: r/l-knee, r/l-ankle (lower leg).
P4_LOWER_LEG: tuple[int, ...] = (9, 12, 10, 13)

REGION_NAMES = ("whole", "head", "upper_body", "upper_leg", "lower_leg")
STATUSES = ("pose", "filled", "strips")
StripLayout = Literal["equal", "canonical"]
STRIP_LAYOUTS: tuple[str, ...] = get_args(StripLayout)

#: A detected joint farther outside the image than this fraction of the image's width (for x) or
#: height (for y) is treated as undetected, so the canonical-pose fill replaces it.  The paper is
#: silent; pose estimators only report joints inside the frame they ran on, so such a joint is a
#: broken file or a wrong coordinate frame (x = 10,000 on a 64-pixel image), and keeping it would
#: stretch every box to it.  0.25 leaves room for rescaled or slightly misaligned annotations.
DEFAULT_MAX_OUTSIDE = 0.25


#: how a part's keypoints become its visibility (``data.pose.visibility``): ``confidence``, the mean
#: confidence of its joints (missing ones 0), or ``detected``, the share of its joints detected above
#: ``min_conf`` (the estimator's confidence among the joints it found left out)
PartVisibility = Literal["confidence", "detected"]
PART_VISIBILITIES: tuple[str, ...] = get_args(PartVisibility)


def region_confidence(
    keypoints: np.ndarray | None, visibility: str = "confidence", min_conf: float = 0.1
) -> np.ndarray:
    """Each part region's visibility from its joints (Eq. 1-2: P1..P4), missing joints counting 0.

    A visibility estimate from keypoints alone (PGFA's and PVPM's cue): a part whose joints the
    estimator missed or doubted is likely hidden. ``visibility="confidence"``: the joints' mean
    confidence; ``"detected"``: the share of them above ``min_conf`` (1 for a part whose joints
    were all found, however confidently).

    Returns:
        (4,) float32 in [0, 1]: head, upper body, upper leg, lower leg; NaN without keypoints.
    """
    if visibility not in PART_VISIBILITIES:
        raise ValueError(f"part visibility must be one of {PART_VISIBILITIES}, got {visibility!r}")
    if keypoints is None:
        return np.full(4, np.nan, dtype=np.float32)
    points = np.asarray(keypoints, dtype=np.float64)
    if points.ndim != 2 or points.shape[0] != 18 or points.shape[1] < 3:
        return np.full(4, np.nan, dtype=np.float32)
    confidence = np.nan_to_num(np.clip(points[:, 2], 0.0, 1.0))
    if visibility == "detected":
        confidence = (confidence > min_conf).astype(np.float64)
    return np.array(
        [confidence[list(group)].mean() for group in (P1_HEAD, P2_UPPER_BODY, P3_UPPER_LEG, P4_LOWER_LEG)],
        dtype=np.float32,
    )


def far_outside(keypoints: np.ndarray, width: float, height: float, max_outside: float | None) -> np.ndarray:
    """Mask of the joints lying more than ``max_outside`` x the image size outside a ``width`` x ``height`` image.

    Args:
        keypoints: (18, 2) or (18, 3) joints, pixels.
        width, height: the image size.
        max_outside: allowed distance outside the image as a fraction of its width (x) / height (y);
            None disables the check (an all-False mask).

    Returns:
        A boolean (18,) mask; non-finite coordinates count as outside.
    """
    points = np.asarray(keypoints, dtype=np.float64)[:, :2]
    if max_outside is None:
        return np.zeros(len(points), dtype=bool)
    if max_outside < 0:
        raise ValueError(f"max_outside must be >= 0 or None, got {max_outside}")
    x, y = points[:, 0], points[:, 1]
    with np.errstate(invalid="ignore"):
        inside = (
            (x >= -max_outside * width)
            & (x <= (1.0 + max_outside) * width)
            & (y >= -max_outside * height)
            & (y <= (1.0 + max_outside) * height)
        )
    return ~inside


def _as_points(keypoints: np.ndarray) -> np.ndarray:
    points = np.asarray(keypoints, dtype=np.float64)
    if points.ndim != 2 or points.shape[0] != NUM_JOINTS or points.shape[1] not in (2, 3):
        raise ValueError(f"keypoints must have shape (18, 2) or (18, 3) in OpenPose order, got {points.shape}")
    if not np.isfinite(points[:, :2]).all():
        raise ValueError("keypoints contain NaN or infinite coordinates")
    return points[:, :2]


def compute_regions(keypoints: np.ndarray, beta: float) -> np.ndarray:
    """The five pose-aligned boxes of Eq. 1-2, using all 18 joints as given.

    Fill low-confidence joints first (:func:`reid.pose.fill_missing_joints`) or use
    :func:`image_regions`; a confidence column, if present, is ignored here.  Boxes are not
    clipped to the image: they may have negative or too large coordinates.

    Args:
        keypoints: (18, 2) or (18, 3) joints in OpenPose order, pixels, y growing downwards.
        beta: overlap between neighbouring regions as a fraction of the body height H
            (the paper's text uses 0.1; Table 11 sweeps k/48, best 3/48).

    Returns:
        (5, 4) float64 boxes (x1, y1, x2, y2): whole body, head, upper body, upper leg, lower leg.

    Raises:
        ValueError: wrong shape, non-finite coordinates, or a degenerate pose (H <= 0).
    """
    points = _as_points(keypoints)
    x, y = points[:, 0], points[:, 1]
    groups = (P1_HEAD, P2_UPPER_BODY, P3_UPPER_LEG, P4_LOWER_LEG)
    head_y, upper_y, upper_leg_y, lower_leg_y = (y[list(group)] for group in groups)
    # Eq. 1: above the head by the head group's extent, below the ankles by a third of the lower leg.
    top = 2.0 * head_y.min() - head_y.max()
    bottom = 4.0 / 3.0 * lower_leg_y.max() - 1.0 / 3.0 * lower_leg_y.min()
    height = bottom - top
    if not height > 0:
        raise ValueError(f"degenerate pose: body height H = {height:.3g} <= 0 (joints out of vertical order)")
    x_centre = x.mean()
    x_left = min(x_centre - height / 4.0, x.min())
    x_right = max(x_centre + height / 4.0, x.max())
    overlap = beta * height
    # Eq. 2.
    return np.array(
        [
            [x_left, top, x_right, bottom],
            [x_left, top, x_right, head_y.max() + overlap],
            [x_left, upper_y.min() - overlap, x_right, upper_y.max() + overlap],
            [x_left, upper_leg_y.min() - overlap, x_right, upper_leg_y.max() + overlap],
            [x_left, lower_leg_y.min() - overlap, x_right, bottom],
        ],
        dtype=np.float64,
    )


@lru_cache(maxsize=1)
def _canonical_strip_edges() -> tuple[tuple[float, float], ...]:
    """Mean vertical extent of each part region (beta = 0) over the canonical poses, as fractions of H."""
    spans = []
    for pose in load_canonical_poses().coords:
        boxes = compute_regions(pose, 0.0)
        top, height = boxes[0, 1], boxes[0, 3] - boxes[0, 1]
        spans.append((boxes[1:, [1, 3]] - top) / height)
    mean = np.mean(spans, axis=0)
    return tuple((float(a), float(b)) for a, b in mean)


def strip_regions(width: float, height: float, beta: float, *, layout: StripLayout = "equal") -> np.ndarray:
    """The baseline's fixed regions: the whole image and four horizontal strips.

    The paper only says "fixed horizontal strips".  Strips span the full width; like Eq. 2, the
    head strip starts at the image top, the lower-leg strip ends at the bottom, and every other
    strip edge is pushed outwards by ``beta * height``.

    Args:
        width: image width in pixels.
        height: image height in pixels.
        beta: overlap as a fraction of the image height.
        layout: ``"equal"`` (default): four equal quarters; ``"canonical"``: the mean vertical
            extents of the pose regions of the canonical poses, scaled to the image height
            (head ~0-24 %, upper body ~22-55 %, upper leg ~55-75 %, lower leg ~74-100 %).

    Returns:
        (5, 4) float64 boxes (x1, y1, x2, y2).
    """
    if not (width > 0 and height > 0):
        raise ValueError(f"image size must be positive, got width={width}, height={height}")
    if layout == "equal":
        spans = [(i / 4.0, (i + 1) / 4.0) for i in range(4)]
    elif layout == "canonical":
        spans = list(_canonical_strip_edges())
    else:
        raise ValueError(f"unknown strip layout {layout!r}; choose one of {', '.join(STRIP_LAYOUTS)}")
    overlap = beta * height
    boxes = [[0.0, 0.0, float(width), float(height)]]
    for i, (start, end) in enumerate(spans):
        y1 = 0.0 if i == 0 else start * height - overlap
        y2 = float(height) if i == 3 else end * height + overlap
        boxes.append([0.0, y1, float(width), y2])
    return np.array(boxes, dtype=np.float64)


class _RegionDetail(NamedTuple):
    boxes: np.ndarray
    status: str
    n_filled: int
    reason: str  # why strips were used ("" otherwise)
    n_outside: int = 0  # detected joints dropped for lying far outside the image


def _image_regions_detail(
    keypoints: np.ndarray | None,
    width: float,
    height: float,
    *,
    beta: float,
    min_conf: float,
    min_joints: int,
    strip_options: Mapping[str, Any] | None,
    allow_rotation: bool,
    max_outside: float | None = DEFAULT_MAX_OUTSIDE,
) -> _RegionDetail:
    n_outside = 0

    def strips(reason: str) -> _RegionDetail:
        boxes = strip_regions(width, height, beta, **(strip_options or {}))
        return _RegionDetail(boxes, "strips", 0, reason, n_outside)

    if keypoints is None:
        return strips("no_keypoints")
    keypoints = np.asarray(keypoints, dtype=np.float64)
    if keypoints.shape != (NUM_JOINTS, 3):
        raise ValueError(f"keypoints must have shape (18, 3) (x, y, confidence), got {keypoints.shape}")
    detected = keypoints[:, 2] > min_conf
    outside = detected & far_outside(keypoints, width, height, max_outside)
    if outside.any():
        # Treated as undetected: the canonical-pose fill (or the strips) takes over, boxes stay near the image.
        n_outside = int(outside.sum())
        keypoints = keypoints.copy()
        keypoints[outside, 2] = 0.0
    confident = (keypoints[:, 2] > min_conf) & np.isfinite(keypoints[:, :2]).all(axis=1)
    n_confident = int(confident.sum())
    if n_confident < NUM_JOINTS and n_confident < max(min_joints, 2):
        return strips("too_few_joints")
    try:
        filled, n_filled = fill_missing_joints(
            keypoints, min_conf, min_joints=min_joints, allow_rotation=allow_rotation
        )
        boxes = compute_regions(filled, beta)
    except ValueError:
        return strips("implausible")
    whole = boxes[0]
    # A fit that lands the body entirely outside the image is a failed fit, not a person.
    if whole[2] <= 0 or whole[0] >= width or whole[3] <= 0 or whole[1] >= height:
        return strips("implausible")
    return _RegionDetail(boxes, "filled" if n_filled else "pose", n_filled, "", n_outside)


def image_regions(
    keypoints: np.ndarray | None,
    width: float,
    height: float,
    *,
    beta: float = 0.1,
    min_conf: float = DEFAULT_MIN_CONF,
    min_joints: int = DEFAULT_MIN_JOINTS,
    strip_options: Mapping[str, Any] | None = None,
    allow_rotation: bool = False,
    max_outside: float | None = DEFAULT_MAX_OUTSIDE,
) -> tuple[np.ndarray, str, int]:
    """Regions of one image: from its pose when possible, else the fixed strips.

    Args:
        keypoints: (18, 3) (x, y, confidence) in OpenPose order, or None (no keypoints).
        width: image width in pixels (for the strips).
        height: image height in pixels.
        beta: overlap as a fraction of H (pose) or of the image height (strips).
        min_conf: joints with confidence above this are trusted (default 0.1, see
            :data:`reid.pose.readers.DEFAULT_MIN_CONF`).
        min_joints: fewer trusted joints than this -> strips.
        strip_options: keyword options of :func:`strip_regions` (``{"layout": "canonical"}``).
        allow_rotation: see :func:`reid.pose.fit_canonical_pose`.
        max_outside: a detected joint farther outside the image than this fraction of its
            width / height counts as undetected (see :data:`DEFAULT_MAX_OUTSIDE`); None keeps every joint.

    Returns:
        ``(boxes, status, n_filled)``: (5, 4) boxes; ``"pose"`` (all joints trusted),
        ``"filled"`` (some joints taken from a canonical pose) or ``"strips"`` (no keypoints,
        too few trusted joints, or a degenerate / off-image pose); the number of filled joints.
    """
    detail = _image_regions_detail(
        keypoints,
        width,
        height,
        beta=beta,
        min_conf=min_conf,
        min_joints=min_joints,
        strip_options=strip_options,
        allow_rotation=allow_rotation,
        max_outside=max_outside,
    )
    return detail.boxes, detail.status, detail.n_filled


class RegionBatch(NamedTuple):
    """Regions of many images.

    Attributes:
        boxes: (N, 5, 4) float64.
        counts: images per status, ``{"pose": .., "filled": .., "strips": ..}``.
        n_filled: total number of joints taken from canonical poses.
        status: the status of each image, in order.
        n_outside: detected joints treated as undetected for lying far outside their image.
        n_outside_images: images with at least one such joint.
    """

    boxes: np.ndarray
    counts: dict[str, int]
    n_filled: int
    status: list[str]
    n_outside: int = 0
    n_outside_images: int = 0


def regions_for_images(
    items: Iterable[tuple[str, np.ndarray | None, tuple[int, int]]],
    *,
    beta: float = 0.1,
    min_conf: float = DEFAULT_MIN_CONF,
    min_joints: int = DEFAULT_MIN_JOINTS,
    strip_options: Mapping[str, Any] | None = None,
    allow_rotation: bool = False,
    max_outside: float | None = DEFAULT_MAX_OUTSIDE,
    log_name: str = "images",
) -> RegionBatch:
    """Regions for a list of ``(image_path, keypoints or None, (width, height))`` and the tallies.

    Logs (``logger.info``) how many images used their pose, a filled pose or strips, why the
    strips, and how many joints were filled; a warning counts the joints dropped for lying far
    outside their image (``max_outside``).  Keyword options as in :func:`image_regions`;
    `log_name` names the set in the log line (``"market1501/train"``...).
    """
    boxes: list[np.ndarray] = []
    statuses: list[str] = []
    counts = dict.fromkeys(STATUSES, 0)
    reasons = {"no_keypoints": 0, "too_few_joints": 0, "implausible": 0}
    n_filled = 0
    n_outside = n_outside_images = 0
    first_outside = ""
    for image_path, keypoints, (width, height) in items:
        try:
            detail = _image_regions_detail(
                keypoints,
                width,
                height,
                beta=beta,
                min_conf=min_conf,
                min_joints=min_joints,
                strip_options=strip_options,
                allow_rotation=allow_rotation,
                max_outside=max_outside,
            )
        except ValueError as err:
            raise ValueError(f"{image_path}: {err}") from None
        boxes.append(detail.boxes)
        statuses.append(detail.status)
        counts[detail.status] += 1
        n_filled += detail.n_filled
        if detail.n_outside:
            n_outside += detail.n_outside
            n_outside_images += 1
            first_outside = first_outside or str(image_path)
        if detail.reason:
            reasons[detail.reason] += 1
            logger.debug("%s: strips (%s)", image_path, detail.reason)
    logger.info(
        "regions for %d %s: %d from pose, %d filled from canonical poses (%d joints), "
        "%d fixed strips (%d without keypoints, %d with < %d joints of confidence > %g, %d implausible)",
        len(boxes),
        log_name,
        counts["pose"],
        counts["filled"],
        n_filled,
        counts["strips"],
        reasons["no_keypoints"],
        reasons["too_few_joints"],
        min_joints,
        min_conf,
        reasons["implausible"],
    )
    if n_outside:
        logger.warning(
            "%s: %d detected joints in %d images lie more than %g x the image size outside it (first: %s); "
            "treated as undetected and filled from canonical poses (data.pose.max_outside)",
            log_name,
            n_outside,
            n_outside_images,
            max_outside,
            first_outside,
        )
    stacked = np.stack(boxes) if boxes else np.zeros((0, 5, 4), dtype=np.float64)
    return RegionBatch(stacked, counts, n_filled, statuses, n_outside, n_outside_images)
