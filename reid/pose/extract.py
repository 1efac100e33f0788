"""Pose estimators for offline keypoint extraction: the estimator registry, MediaPipe Pose and the JSON they write.

An estimator maps an (H, W, 3) uint8 RGB image to OpenPose COCO-18 joints (:class:`PoseEstimator`);
it is pluggable (:func:`register_estimator`, :func:`build_estimator`).  The one shipped is MediaPipe
Pose (legacy ``solutions`` API, model inside the wheel, no download), an optional install:
``make pose``.  Each image's result is written as ``<out>/<image parent folder>/<stem>_keypoints.json``
(:func:`keypoint_json_path`) in OpenPose's format (:func:`openpose_document`),
``{"version": 1.3, "people": [{"pose_keypoints_2d": [54 numbers]}]}``, with an empty ``people``
list when nobody was found, and atomically (:func:`write_json_atomically`): exactly what
:class:`reid.pose.OpenPoseJsonSource` reads.

Running an estimator over a data set's images is the ``reid-extract-pose`` tool
(:mod:`reid.tools.extract_pose`).
"""

from __future__ import annotations

import importlib.util
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from reid.errors import ReidError
from reid.pose.readers import NUM_JOINTS

MEDIAPIPE_MISSING = (
    "MediaPipe is not installed: run make pose (installs mediapipe==0.10.14 without its opencv-contrib dependency)"
)

#: OpenPose writes this version number; readers ignore it.
OPENPOSE_JSON_VERSION = 1.3

#: MediaPipe landmark index of each COCO-18 joint (OpenPose order); None: the neck, which
#: MediaPipe lacks and :func:`mediapipe_to_coco18` puts midway between the shoulders.
MEDIAPIPE_TO_COCO18: tuple[int | None, ...] = (
    0,  # nose        <- nose
    None,  # neck     <- mid-point of left_shoulder (11) and right_shoulder (12)
    12,  # r_shoulder <- right_shoulder
    14,  # r_elbow    <- right_elbow
    16,  # r_wrist    <- right_wrist
    11,  # l_shoulder <- left_shoulder
    13,  # l_elbow    <- left_elbow
    15,  # l_wrist    <- left_wrist
    24,  # r_hip      <- right_hip
    26,  # r_knee     <- right_knee
    28,  # r_ankle    <- right_ankle
    23,  # l_hip      <- left_hip
    25,  # l_knee     <- left_knee
    27,  # l_ankle    <- left_ankle
    5,  # r_eye       <- right_eye
    2,  # l_eye       <- left_eye
    8,  # r_ear       <- right_ear
    7,  # l_ear       <- left_ear
)
MEDIAPIPE_NUM_LANDMARKS = 33
MEDIAPIPE_LEFT_SHOULDER = 11
MEDIAPIPE_RIGHT_SHOULDER = 12

#: MediaPipe's own drawing utilities hide landmarks below this visibility; we drop them the same way.
DEFAULT_MIN_VISIBILITY = 0.5
#: Border added around the image on every side, as a fraction of its longer side (see MediaPipePose).
DEFAULT_MARGIN = 0.5


class ExtractionError(ReidError, ValueError):
    """A setting or input the extraction cannot use (an unknown estimator, two images sharing a JSON path...)."""


class PoseEstimatorUnavailable(ReidError, RuntimeError):
    """The requested pose estimator cannot run here (not installed, incompatible dependency)."""


class PoseEstimator(Protocol):
    """Anything that maps an (H, W, 3) uint8 RGB image to (18, 3) COCO-18 joints, or None for no person."""

    def __call__(self, image: np.ndarray) -> np.ndarray | None:
        """Joints (x, y, confidence) in image pixels, undetected joints all zero; None when nobody is found."""
        ...


_ESTIMATORS: dict[str, Callable[..., PoseEstimator]] = {}


def register_estimator(name: str) -> Callable[[Callable[..., PoseEstimator]], Callable[..., PoseEstimator]]:
    """Decorator registering a factory ``factory(**options) -> PoseEstimator`` under ``name``."""

    def decorator(factory: Callable[..., PoseEstimator]) -> Callable[..., PoseEstimator]:
        _ESTIMATORS[name] = factory
        return factory

    return decorator


def available_estimators() -> list[str]:
    """The registered estimator names, sorted."""
    return sorted(_ESTIMATORS)


def build_estimator(name: str, **options: Any) -> PoseEstimator:
    """Builds the estimator registered as ``name`` with its keyword options.

    Raises:
        ValueError: unknown name (the message lists the known ones).
        PoseEstimatorUnavailable: the estimator's package is missing or unusable.
    """
    if name not in _ESTIMATORS:
        raise ExtractionError(f"unknown pose estimator {name!r}; choose one of {', '.join(available_estimators())}")
    return _ESTIMATORS[name](**options)


# --------------------------------------------------------------------------- MediaPipe


def mediapipe_to_coco18(
    landmarks: np.ndarray,
    image_size: tuple[int, int],
    *,
    frame: tuple[float, float, float, float] | None = None,
    min_visibility: float = DEFAULT_MIN_VISIBILITY,
) -> np.ndarray:
    """Converts MediaPipe's 33 pose landmarks to OpenPose COCO-18 joints in image pixels.

    The neck is the mid-point of the two shoulders with the smaller of their two confidences,
    and only exists when both shoulders do.  A joint whose visibility is below
    `min_visibility` or that falls outside the image is written as (0, 0, 0), as OpenPose
    writes undetected joints.

    Args:
        landmarks: (33, 3) array of (x, y, visibility), x and y normalised to [0, 1] over `frame`.
        image_size: ``(width, height)`` of the image the joints are reported in.
        frame: ``(left, top, width, height)`` of the frame the landmarks are normalised to, in
            image pixels; ``(-pad_left, -pad_top, padded_width, padded_height)`` when the
            estimator saw a padded copy.  None: the image itself.
        min_visibility: visibility below which a landmark counts as undetected.

    Returns:
        An (18, 3) float64 array (x, y, confidence).
    """
    landmarks = np.asarray(landmarks, dtype=np.float64)
    if landmarks.shape != (MEDIAPIPE_NUM_LANDMARKS, 3):
        raise ExtractionError(
            f"expected ({MEDIAPIPE_NUM_LANDMARKS}, 3) MediaPipe landmarks (x, y, visibility), got {landmarks.shape}"
        )
    width, height = image_size
    left, top, frame_width, frame_height = frame if frame is not None else (0.0, 0.0, float(width), float(height))
    pixels = np.empty_like(landmarks)
    pixels[:, 0] = left + landmarks[:, 0] * frame_width
    pixels[:, 1] = top + landmarks[:, 1] * frame_height
    pixels[:, 2] = landmarks[:, 2]
    inside = (pixels[:, 0] >= 0) & (pixels[:, 0] < width) & (pixels[:, 1] >= 0) & (pixels[:, 1] < height)
    valid = inside & (pixels[:, 2] >= min_visibility)
    pixels[~valid] = 0.0

    joints = np.zeros((NUM_JOINTS, 3), dtype=np.float64)
    for joint, index in enumerate(MEDIAPIPE_TO_COCO18):
        if index is not None:
            joints[joint] = pixels[index]
    left_shoulder, right_shoulder = MEDIAPIPE_LEFT_SHOULDER, MEDIAPIPE_RIGHT_SHOULDER
    if valid[left_shoulder] and valid[right_shoulder]:
        joints[1, :2] = (pixels[left_shoulder, :2] + pixels[right_shoulder, :2]) / 2.0
        joints[1, 2] = min(pixels[left_shoulder, 2], pixels[right_shoulder, 2])
    return joints


def _import_mediapipe() -> Any:
    """Imports MediaPipe, or raises :class:`PoseEstimatorUnavailable` saying how to install it.

    MediaPipe 0.10.14 was built for protobuf<5, which cannot sit next to wandb (protobuf>=5);
    ``make pose`` installs protobuf 6.33 instead, and the two class look-ups protobuf 5 removed
    (``SymbolDatabase.GetPrototype``, ``MessageFactory.GetPrototype``) are mapped here to their
    replacement, ``message_factory.GetMessageClass``, before MediaPipe is imported.
    """
    try:
        installed = importlib.util.find_spec("mediapipe") is not None
    except (ImportError, ValueError, AttributeError):  # ValueError: a module blocked in sys.modules
        installed = False
    if not installed:
        raise PoseEstimatorUnavailable(MEDIAPIPE_MISSING)
    from google import protobuf
    from google.protobuf import message_factory, symbol_database

    if int(protobuf.__version__.split(".")[0]) >= 7:
        # protobuf 7 removed FieldDescriptor.label, which MediaPipe 0.10.14 reads while building its graph.
        raise PoseEstimatorUnavailable(
            f"MediaPipe 0.10.14 cannot run with protobuf {protobuf.__version__} (it needs protobuf<7): "
            "run make pose, which installs protobuf 6.33 (accepted by the other packages too)"
        )

    def get_prototype(self: Any, descriptor: Any) -> Any:
        return message_factory.GetMessageClass(descriptor)

    for legacy in (symbol_database.SymbolDatabase, message_factory.MessageFactory):
        if not hasattr(legacy, "GetPrototype"):
            legacy.GetPrototype = get_prototype
    try:
        import mediapipe
    except ImportError:
        raise PoseEstimatorUnavailable(MEDIAPIPE_MISSING) from None
    return mediapipe


class MediaPipePose:
    """MediaPipe Pose (legacy ``solutions`` API, BlazePose full model) as a :class:`PoseEstimator`.

    MediaPipe's person detector misses or mis-scores people who fill a narrow crop edge to edge
    (a 128x64 ReID crop finds a person far less often than the same crop centred on a larger
    canvas), so the image is padded with a black border of `margin` times its longer side on
    every side, made square, before the estimator sees it; landmarks are mapped back to the
    original pixels and those falling outside it are dropped.  The padding is our choice (the
    paper used OpenPose); ``margin=0`` turns it off.

    Args:
        model_complexity: 0 (lite), 1 (full) or 2 (heavy; 2 is not shipped in the wheel and
            would be downloaded, so it is refused).
        min_visibility: landmarks below this visibility become undetected joints.
        margin: border on each side as a fraction of the image's longer side.
        min_detection_confidence: MediaPipe's person-detection threshold.
    """

    def __init__(
        self,
        *,
        model_complexity: int = 1,
        min_visibility: float = DEFAULT_MIN_VISIBILITY,
        margin: float = DEFAULT_MARGIN,
        min_detection_confidence: float = 0.5,
    ) -> None:
        if model_complexity not in (0, 1):
            raise ExtractionError(
                f"model_complexity={model_complexity}: only 0 and 1 ship inside the MediaPipe wheel "
                "(2 would need a download)"
            )
        if margin < 0:
            raise ExtractionError(f"margin={margin} must be >= 0 (a fraction of the image's longer side)")
        mediapipe = _import_mediapipe()
        self.min_visibility = float(min_visibility)
        self.margin = float(margin)
        self._pose = mediapipe.solutions.pose.Pose(
            static_image_mode=True,
            model_complexity=int(model_complexity),
            min_detection_confidence=float(min_detection_confidence),
        )

    def pad(self, image: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        """The image centred on a black square canvas, and the (left, top) offset where it sits."""
        height, width = image.shape[:2]
        side = int(round(max(height, width) * (1.0 + 2.0 * self.margin)))
        left, top = (side - width) // 2, (side - height) // 2
        canvas = np.zeros((side, side, 3), dtype=np.uint8)
        canvas[top : top + height, left : left + width] = image
        return canvas, (left, top)

    def __call__(self, image: np.ndarray) -> np.ndarray | None:
        """Joints of the person MediaPipe finds in `image` (H, W, 3 uint8 RGB), or None."""
        height, width = image.shape[:2]
        canvas, (left, top) = self.pad(image)
        result = self._pose.process(canvas)
        if result.pose_landmarks is None:
            return None
        landmarks = np.array(
            [(mark.x, mark.y, mark.visibility) for mark in result.pose_landmarks.landmark], dtype=np.float64
        )
        side = float(canvas.shape[0])
        return mediapipe_to_coco18(
            landmarks, (width, height), frame=(-left, -top, side, side), min_visibility=self.min_visibility
        )


register_estimator("mediapipe")(MediaPipePose)


# --------------------------------------------------------------------------- OpenPose JSON files


def keypoint_json_path(out: str | Path, image_path: str | Path, *, by_split_folder: bool = False) -> Path:
    """``<out>/<image parent folder name>/<stem>_keypoints.json``, the first path the JSON reader tries.

    ``by_split_folder``: ``<out>/<the folder above the image's>/<stem>_keypoints.json`` instead, for a
    data set with one folder per identity whose splits share file names (Occluded-REID); the
    reader tries that path too.
    """
    image = Path(image_path)
    folder = image.parent.parent if by_split_folder else image.parent
    return Path(out) / folder.name / f"{image.stem}_keypoints.json"


def openpose_document(keypoints: np.ndarray | None) -> dict[str, Any]:
    """The OpenPose JSON document of one image: one person, or an empty ``people`` list for None."""
    if keypoints is None:
        return {"version": OPENPOSE_JSON_VERSION, "people": []}
    keypoints = np.asarray(keypoints, dtype=np.float64)
    if keypoints.shape != (NUM_JOINTS, 3):
        raise ExtractionError(f"a pose estimator returned shape {keypoints.shape}, expected ({NUM_JOINTS}, 3)")
    if not np.isfinite(keypoints).all():
        raise ExtractionError("a pose estimator returned non-finite keypoints")
    return {"version": OPENPOSE_JSON_VERSION, "people": [{"pose_keypoints_2d": [float(v) for v in keypoints.ravel()]}]}


def write_json_atomically(path: Path, document: dict[str, Any]) -> None:
    """Writes `document` to `path` through a temporary file in the same folder and ``os.replace``.

    A run killed half-way leaves either the old file or none, never a truncated one (a
    leftover ``*.tmp`` is ignored by the reader's lookup).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(document, stream)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
