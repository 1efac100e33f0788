"""A grid of synthetic samples with their keypoints drawn (the picture: ``python -m reid.tools.synthetic_preview``)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np

from reid.data.synthetic.figure import SKELETON
from reid.data.synthetic.generator import GALLERY_DIR, KEYPOINT_DIR, MARKET_NAME_PATTERN, QUERY_DIR, TRAIN_DIR

# OpenPose-like colours per limb (RGB), so left and right read apart.
_LIMB_COLOURS = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
    (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255),
    (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170),
)  # fmt: skip


def draw_keypoints(image: np.ndarray, keypoints: list[float], zoom: int = 2) -> np.ndarray:
    """Enlarge an RGB image ``zoom`` times and draw the COCO-18 skeleton; joints at 0, 0, 0 are skipped.

    Args:
        image: RGB uint8 H x W x 3.
        keypoints: 54 numbers (x, y, confidence per joint) in the image's pixels.
        zoom: enlargement factor.
    """
    big = cv2.resize(image, (image.shape[1] * zoom, image.shape[0] * zoom), interpolation=cv2.INTER_NEAREST)
    kp = np.asarray(keypoints, dtype=float).reshape(18, 3)
    present = kp[:, 2] > 0
    # pixel centre of output pixel j after nearest-neighbour zoom is zoom*j + (zoom-1)/2
    pts = kp[:, :2] * zoom + (zoom - 1) / 2
    for (a, b), colour in zip(SKELETON, _LIMB_COLOURS, strict=True):
        if present[a] and present[b]:
            cv2.line(
                big, tuple(int(round(v)) for v in pts[a]), tuple(int(round(v)) for v in pts[b]), colour, 1, cv2.LINE_AA
            )
    for j in np.flatnonzero(present):
        cv2.circle(big, tuple(int(round(v)) for v in pts[j]), 2, (255, 255, 255), -1, cv2.LINE_AA)
        cv2.circle(big, tuple(int(round(v)) for v in pts[j]), 2, (0, 0, 0), 1, cv2.LINE_AA)
    return big


def preview_grid(dataset: Path, per_camera: int = 8, zoom: int = 2, gap: int = 4) -> np.ndarray:
    """One row per camera of ``per_camera`` images (train, gallery and query mixed), keypoints drawn.

    Args:
        dataset: a folder written by :func:`generate`.
        per_camera: samples per row.
        zoom: enlargement factor of each sample.
        gap: pixels between samples.

    Returns:
        RGB uint8 grid.
    """
    pattern = re.compile(MARKET_NAME_PATTERN)
    by_camera: dict[int, list[tuple[str, Path]]] = {}
    for folder in (TRAIN_DIR, GALLERY_DIR, QUERY_DIR):
        for path in sorted((dataset / folder).glob("*.jpg")):
            match = pattern.match(path.name)
            if match is None:
                raise ValueError(
                    f"{path}: not a Market-1501 file name; was this folder written by reid.data.synthetic?"
                )
            by_camera.setdefault(int(match.group(2)), []).append((folder, path))
    if not by_camera:
        raise FileNotFoundError(f"{dataset}: no images under {TRAIN_DIR}/, {GALLERY_DIR}/ or {QUERY_DIR}/")
    rows = []
    label_w = 28 * zoom
    for camera in sorted(by_camera):
        files = by_camera[camera]
        picks = [files[int(i)] for i in np.linspace(0, len(files) - 1, min(per_camera, len(files)))]
        cells = []
        for folder, path in picks:
            raw = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if raw is None:
                raise OSError(f"OpenCV cannot read {path}")
            image = cv2.cvtColor(raw, cv2.COLOR_BGR2RGB)
            kp_file = dataset / KEYPOINT_DIR / folder / f"{path.stem}_keypoints.json"
            people = json.loads(kp_file.read_text())["people"]
            cells.append(draw_keypoints(image, people[0]["pose_keypoints_2d"] if people else [0] * 54, zoom))
        cell_h, cell_w = cells[0].shape[:2]
        row = np.full((cell_h, label_w + per_camera * (cell_w + gap), 3), 255, np.uint8)
        cv2.putText(
            row, f"c{camera}", (4, cell_h // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.5 * zoom, (0, 0, 0), zoom, cv2.LINE_AA
        )
        for k, cell in enumerate(cells):
            x = label_w + k * (cell_w + gap)
            row[:, x : x + cell_w] = cell
        rows.append(row)
    spacer = np.full((gap, rows[0].shape[1], 3), 255, np.uint8)
    return np.concatenate([part for row in rows for part in (row, spacer)][:-1])
