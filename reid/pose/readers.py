"""Keypoint readers (OpenPose / AlphaPose JSON, Pose-Transfer CSV) returning OpenPose COCO-18 arrays."""

from __future__ import annotations

import json
import logging
import math
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from reid.errors import ReidError

logger = logging.getLogger(__name__)

NUM_JOINTS = 18

#: OpenPose COCO-18 file order (the order of every array this package returns).
JOINT_NAMES: tuple[str, ...] = (
    "nose",  # 0
    "neck",  # 1
    "r_shoulder",  # 2
    "r_elbow",  # 3
    "r_wrist",  # 4
    "l_shoulder",  # 5
    "l_elbow",  # 6
    "l_wrist",  # 7
    "r_hip",  # 8
    "r_knee",  # 9
    "r_ankle",  # 10
    "l_hip",  # 11
    "l_knee",  # 12
    "l_ankle",  # 13
    "r_eye",  # 14
    "l_eye",  # 15
    "r_ear",  # 16
    "l_ear",  # 17
)

#: The paper numbers joints K1..K18 top to bottom; entry k-1 is the OpenPose index of K_k.
PAPER_TO_OPENPOSE: tuple[int, ...] = (
    0,  # K1  nose
    14,  # K2  right eye
    15,  # K3  left eye
    16,  # K4  right ear
    17,  # K5  left ear
    1,  # K6  neck
    2,  # K7  right shoulder
    5,  # K8  left shoulder
    3,  # K9  right elbow
    6,  # K10 left elbow
    4,  # K11 right wrist
    7,  # K12 left wrist
    8,  # K13 right hip
    11,  # K14 left hip
    9,  # K15 right knee
    12,  # K16 left knee
    10,  # K17 right ankle
    13,  # K18 left ankle
)

#: Index of each joint's mirror image (left <-> right); used when a pose itself is flipped.
FLIP_PERMUTATION: tuple[int, ...] = (0, 1, 5, 6, 7, 2, 3, 4, 11, 12, 13, 8, 9, 10, 15, 14, 17, 16)

#: Joints with confidence above this count as detected.  The paper gives no threshold;
#: OpenPose confidences typically lie in 0.05-0.95; 0.1 keeps weak detections that a stricter
#: threshold would drop (the occluded-ReID code uses 0.2).  Every reader and fill takes it as a
#: keyword option (``min_conf``).
DEFAULT_MIN_CONF = 0.1

KeypointFormat = Literal["openpose_json", "pose_transfer_csv", "strips"]
KEYPOINT_SOURCES: tuple[str, ...] = get_args(KeypointFormat)


class KeypointFormatError(ReidError, ValueError):
    """A keypoint file that cannot be read as 18 OpenPose COCO-18 joints."""


def flip_keypoints(keypoints: np.ndarray, width: float) -> np.ndarray:
    """Mirror a pose horizontally in an image of `width` pixels, swapping left/right joints.

    Undetected joints (confidence 0) keep their coordinates untouched.
    """
    flipped = np.array(keypoints, dtype=np.float64, copy=True)
    flipped[:, 0] = width - flipped[:, 0]
    if flipped.shape[1] > 2:
        missing = flipped[:, 2] <= 0
        flipped[missing, 0] = np.asarray(keypoints, dtype=np.float64)[missing, 0]
    return flipped[list(FLIP_PERMUTATION)]


# --------------------------------------------------------------------------- OpenPose JSON


def _numbers_or_raise(values: object, what: str, where: str) -> np.ndarray:
    """Turn a JSON list into a finite float array, or raise naming `where` and the problem."""
    if not isinstance(values, list):
        raise KeypointFormatError(f"{where}: {what} is a {type(values).__name__}, expected a JSON list of numbers")
    for i, v in enumerate(values):
        # bool is an int subclass in Python; true/false in a keypoint list is a broken file.
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise KeypointFormatError(
                f"{where}: {what} item {i} is {v!r}, not a number; regenerate the file with the pose estimator"
            )
        if not math.isfinite(v):
            raise KeypointFormatError(
                f"{where}: {what} item {i} is {v!r}; keypoints must be finite numbers "
                "(write an undetected joint as 0, 0, 0): regenerate the file with the pose estimator"
            )
    return np.asarray(values, dtype=np.float64)


def _person_centre(keypoints: np.ndarray, min_conf: float) -> np.ndarray:
    confident = keypoints[:, 2] > min_conf
    if not confident.any():
        return np.array([np.inf, np.inf])
    return keypoints[confident, :2].mean(axis=0)


def read_openpose_json(
    path: str | os.PathLike[str],
    *,
    image_size: tuple[int, int] | None = None,
    min_conf: float = DEFAULT_MIN_CONF,
) -> np.ndarray | None:
    """Read one OpenPose (or AlphaPose ``--format open``) COCO-18 JSON file.

    With several people, the one with most joints of confidence > `min_conf` wins; ties go to
    the person whose confident joints' centre is closest to the image centre when `image_size`
    is known, else to the first listed.  Old OpenPose files that name the list
    ``pose_keypoints`` instead of ``pose_keypoints_2d`` are accepted too.

    Args:
        path: the ``*_keypoints.json`` file.
        image_size: ``(width, height)`` of the image, for the tie-break.
        min_conf: confidence above which a joint counts as detected.

    Returns:
        An (18, 3) float array of (x, y, confidence) in pixels, or None when nobody was detected.

    Raises:
        FileNotFoundError: the file does not exist.
        KeypointFormatError: the file is not valid JSON or a person does not have 54 finite numbers.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: keypoint file not found; check the keypoint folder") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise KeypointFormatError(
            f"{path}: not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}); "
            "re-run the pose estimator for this image"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("people"), list):
        raise KeypointFormatError(f"{path}: no 'people' list at the top level; expected OpenPose JSON output")

    people: list[np.ndarray] = []
    for index, person in enumerate(data["people"]):
        where = f"{path}: person {index}"
        if not isinstance(person, dict):
            raise KeypointFormatError(f"{where} is a {type(person).__name__}, expected an object")
        key = "pose_keypoints_2d" if "pose_keypoints_2d" in person else "pose_keypoints"
        if key not in person:
            raise KeypointFormatError(f"{where} has no 'pose_keypoints_2d' list")
        values = _numbers_or_raise(person[key], key, where)
        if values.size != NUM_JOINTS * 3:
            hint = ""
            if values.size == 17 * 3:
                hint = (
                    " (17 joints: COCO-17 layout without the neck; "
                    "re-run the estimator with COCO-18 / --format open output)"
                )
            elif values.size == 25 * 3:
                hint = " (25 joints: OpenPose BODY_25; run OpenPose with --model_pose COCO)"
            raise KeypointFormatError(
                f"{where}: {key} has {values.size} numbers{hint}, expected 54 (18 COCO-18 joints x (x, y, conf))"
            )
        people.append(values.reshape(NUM_JOINTS, 3))

    if not people:
        return None
    counts = [int((p[:, 2] > min_conf).sum()) for p in people]
    best_count = max(counts)
    tied = [p for p, c in zip(people, counts, strict=True) if c == best_count]
    if len(tied) == 1 or image_size is None:
        return tied[0]
    centre = np.array([image_size[0] / 2.0, image_size[1] / 2.0])
    distances = [float(np.linalg.norm(_person_centre(p, min_conf) - centre)) for p in tied]
    return tied[int(np.argmin(distances))]


# --------------------------------------------------------------------------- Pose-Transfer CSV


def _parse_csv_list(field: str, column: str, where: str) -> np.ndarray:
    try:
        values = json.loads(field)
    except json.JSONDecodeError:
        raise KeypointFormatError(f"{where}: {column} {field.strip()[:40]!r} is not a JSON list of integers") from None
    array = _numbers_or_raise(values, column, where)
    if array.size != NUM_JOINTS:
        raise KeypointFormatError(f"{where}: {column} has {array.size} joints, expected {NUM_JOINTS} (OpenPose order)")
    return array


def read_pose_transfer_csv(path: str | Path) -> dict[str, np.ndarray]:
    """Read a Pose-Transfer / Deformable-GAN annotation CSV (``market-annotation-train.csv``...).

    Format: header ``name:keypoints_y:keypoints_x``, then one row per image, ``:``-separated,
    each list 18 integers in OpenPose order, y before x, ``-1`` for a missing joint.

    Args:
        path: the CSV file.

    Returns:
        Image file name -> (18, 3) float array (x, y, confidence); confidence is 1 for a
        present joint and 0 (with x = y = 0, as OpenPose writes undetected joints) for a missing one.

    Raises:
        FileNotFoundError: the file does not exist.
        KeypointFormatError: a row is malformed; the message names the file and line.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: pose annotation CSV not found; check data.keypoints.path") from None

    result: dict[str, np.ndarray] = {}
    duplicates = 0
    for line_number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line:
            continue
        where = f"{path}, line {line_number}"
        fields = line.split(":")
        if line_number == 1 and fields[0].strip() == "name":
            continue
        if len(fields) != 3:
            raise KeypointFormatError(
                f"{where}: {len(fields)} ':'-separated columns, expected 3 (name:keypoints_y:keypoints_x)"
            )
        name = fields[0].strip()
        if not name:
            raise KeypointFormatError(f"{where}: empty image name")
        ys = _parse_csv_list(fields[1], "keypoints_y", where)
        xs = _parse_csv_list(fields[2], "keypoints_x", where)
        present = (ys != -1) & (xs != -1)
        keypoints = np.zeros((NUM_JOINTS, 3), dtype=np.float64)
        keypoints[present, 0] = xs[present]
        keypoints[present, 1] = ys[present]
        keypoints[present, 2] = 1.0
        if name in result:
            duplicates += 1
            continue
        result[name] = keypoints
    if duplicates:
        logger.warning("%s: %d duplicate image names; kept the first row of each", path, duplicates)
    return result


# --------------------------------------------------------------------------- keypoint sources


class KeypointSource(ABC):
    """Where a data set's keypoints come from; `get` returns (18, 3) arrays or None."""

    def __init__(self) -> None:
        self.n_found = 0
        self.n_missing = 0

    @abstractmethod
    def _lookup(self, image_path: str, image_size: tuple[int, int] | None) -> np.ndarray | None:
        """Keypoints of one image, or None when the source has none for it."""

    def get(self, image_path: str, image_size: tuple[int, int] | None = None) -> np.ndarray | None:
        """Keypoints of `image_path` (OpenPose order, pixels), or None when the source has none.

        Args:
            image_path: the image file.
            image_size: ``(width, height)`` of the image when known (tie-breaks, rescaling).
        """
        keypoints = self._lookup(image_path, image_size)
        if keypoints is None:
            self.n_missing += 1
        else:
            self.n_found += 1
        return keypoints


class OpenPoseJsonSource(KeypointSource):
    """Per-image OpenPose / AlphaPose JSON files under a root folder.

    Looks up, in order, ``<root>/<parent>/<stem>_keypoints.json``, ``<root>/<parent>/<stem>.json``,
    ``<root>/<grandparent>/<stem>_keypoints.json``, ``<root>/<stem>_keypoints.json`` and
    ``<root>/<stem>.json``, where ``<parent>`` is the name of the image's folder
    (``bounding_box_train``...) and ``<grandparent>`` that of the folder above it: the split folder
    of a data set with one folder per identity whose splits share file names (Occluded-REID's
    ``occluded_body_images/001/001_01.tif`` and ``whole_body_images/001/001_01.tif``).
    """

    def __init__(
        self,
        root: str | Path,
        *,
        image_size_hint: tuple[int, int] | None = None,
        min_conf: float = DEFAULT_MIN_CONF,
    ) -> None:
        super().__init__()
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"{self.root}: keypoint folder not found; run OpenPose with --write_json into it "
                "or set the keypoint source to 'strips'"
            )
        self.image_size_hint = image_size_hint
        self.min_conf = min_conf

    def candidates(self, image_path: str) -> list[Path]:
        """The JSON paths tried for `image_path`, in lookup order."""
        image = Path(image_path)
        parent, stem = image.parent.name, image.stem
        return [
            self.root / parent / f"{stem}_keypoints.json",
            self.root / parent / f"{stem}.json",
            self.root / image.parent.parent.name / f"{stem}_keypoints.json",
            self.root / f"{stem}_keypoints.json",
            self.root / f"{stem}.json",
        ]

    def _lookup(self, image_path: str, image_size: tuple[int, int] | None) -> np.ndarray | None:
        for candidate in self.candidates(image_path):
            if candidate.is_file():
                return read_openpose_json(
                    candidate, image_size=image_size or self.image_size_hint, min_conf=self.min_conf
                )
        return None


class PoseTransferCsvSource(KeypointSource):
    """Pose-Transfer CSV annotations (one or several files), keyed by image file name.

    Args:
        paths: one CSV or a list of them (train and test files).
        image_size_hint: ``(width, height)`` of the frame the CSV coordinates refer to (Market's
            128x64 is ``(64, 128)``); when given and `get` receives the real image size,
            coordinates are rescaled to it.  None: coordinates are used as they are.
    """

    def __init__(
        self,
        paths: str | Path | Sequence[str | Path],
        *,
        image_size_hint: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        if isinstance(paths, (str, Path)):
            paths = [paths]
        if not paths:
            raise ValueError("pose_transfer_csv needs at least one CSV path (data.keypoints.path)")
        self.paths = [Path(p) for p in paths]
        self.image_size_hint = image_size_hint
        self.table: dict[str, np.ndarray] = {}
        for csv_path in self.paths:
            for name, keypoints in read_pose_transfer_csv(csv_path).items():
                self.table.setdefault(name, keypoints)
        logger.info("read %d pose annotations from %s", len(self.table), ", ".join(map(str, self.paths)))

    def _lookup(self, image_path: str, image_size: tuple[int, int] | None) -> np.ndarray | None:
        keypoints = self.table.get(Path(image_path).name)
        if keypoints is None:
            return None
        keypoints = keypoints.copy()
        if self.image_size_hint is not None and image_size is not None:
            scale_x = image_size[0] / self.image_size_hint[0]
            scale_y = image_size[1] / self.image_size_hint[1]
            present = keypoints[:, 2] > 0
            keypoints[present, 0] *= scale_x
            keypoints[present, 1] *= scale_y
        return keypoints


def build_keypoint_source(
    source: str,
    path: str | Path | Iterable[str | Path] | None,
    *,
    image_size_hint: tuple[int, int] | None = None,
    min_conf: float = DEFAULT_MIN_CONF,
) -> KeypointSource | None:
    """Build the keypoint source named by the config.

    Args:
        source: ``openpose_json`` (per-image JSON under the folder `path`), ``pose_transfer_csv``
            (one CSV path or a list of them) or ``strips`` (no keypoints: fixed strips; returns None).
        path: folder or CSV path(s); ignored for ``strips``.
        image_size_hint: ``(width, height)``: for JSON, the image size used to break ties between
            people when the caller does not pass one; for CSV, the frame of its coordinates.
        min_conf: detection threshold for choosing among several people (JSON only).
    """
    if source == "strips":
        return None
    if source not in KEYPOINT_SOURCES:
        raise ValueError(f"unknown keypoint source {source!r}; choose one of {', '.join(KEYPOINT_SOURCES)}")
    if path is None:
        raise ValueError(f"keypoint source {source!r} needs a path (data.keypoints.path), or use 'strips'")
    if source == "openpose_json":
        if not isinstance(path, (str, Path)):
            raise ValueError(f"openpose_json needs one folder, got {path!r}")
        return OpenPoseJsonSource(path, image_size_hint=image_size_hint, min_conf=min_conf)
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    return PoseTransferCsvSource(paths, image_size_hint=image_size_hint)
