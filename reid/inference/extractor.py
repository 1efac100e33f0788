"""`FeatureExtractor`: a trained checkpoint's test feature for any images (paths, arrays, PIL), with or without pose.

Everything that defines what the network saw in training comes from the checkpoint's stored
config: the input sizes, β, the normalisation, pose-aligned regions or fixed strips, the pose
thresholds. The images go through the same code as ``evaluate.py`` (regions, crops, evaluation
transform, the network's test feature), so the features of a data set's query and gallery
images, given its keypoint files, score exactly as ``evaluate.py`` scores that checkpoint.

Example::

    from reid import FeatureExtractor

    extractor = FeatureExtractor("outputs/train/runs/<run>/checkpoints/last.ckpt")
    features = extractor(["a.jpg", "b.jpg"], keypoints=["a_keypoints.json", None])  # (2, D)
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from reid.checkpoints import CONFIG_KEY, CheckpointLoadError, find_resume_checkpoint, load_checkpoint
from reid.errors import ReidError
from reid.evaluation.features import keypoint_inputs
from reid.pose.regions import region_confidence

log = logging.getLogger(__name__)

ImageInput = Any  # a path (str / os.PathLike), an (H, W, 3) uint8 RGB array, or a PIL image
KeypointInput = Any  # an (18, 3) COCO-18 array (x, y, confidence), an OpenPose JSON path, or None
# lists longer than this get a progress bar (progress=None)
PROGRESS_FROM = 256
#: how far an image's feature may move with the batch it is extracted in, relative to the largest
#: |feature| (at least 1): float32 rounding of batch-size-dependent CPU kernels (see FeatureExtractor)
BATCH_TOLERANCE = 1e-5


@dataclass
class ExtractedFeatures:
    """What :meth:`FeatureExtractor.extract` returns: the feature and what visibility-aware matching needs beside it.

    A single vector cannot carry a comparison on what both images show, so the branch features
    and the part visibilities travel with it (:func:`reid.metrics.visibility.visibility_distance`).

    Attributes:
        feature: (N, D) the test-time feature (what calling the extractor returns).
        global_feature: (N, d) the global branch's feature E_g.
        part_features: (N, 4, d') the part branches' features E_1..E_4.
        part_weights: (N, 4) inter-attention's mu, or None for a network without it.
        part_confidence: (N, 4) the mean keypoint confidence of each part's joints (NaN without keypoints).
    """

    feature: Tensor
    global_feature: Tensor
    part_features: Tensor
    part_weights: Tensor | None
    part_confidence: Tensor

    def visibility(self, source: str) -> Tensor:
        """The part visibilities of ``source``: ``mu`` (part weights) or ``keypoints`` (confidences)."""
        if source == "keypoints":
            return self.part_confidence
        if source == "mu" and self.part_weights is not None:
            return self.part_weights
        raise FeatureInputError(
            "matching=mu needs a network with inter-attention (model.net.fusion=inter); use matching=keypoints"
            if source == "mu"
            else f"unknown visibility source {source!r}: choose mu or keypoints"
        )


class FeatureInputError(ReidError, ValueError):
    """An image or keypoint input that cannot be used (the message names it)."""


def _as_rgb_array(image: ImageInput, index: int) -> np.ndarray:
    from reid.data.io import read_image

    if isinstance(image, (str, os.PathLike)):
        if Path(image).is_dir():
            raise FeatureInputError(
                f"image {index} ({image}) is a directory, not an image file: pass the image files in it, "
                f"e.g. sorted(Path({str(image)!r}).glob('*.jpg'))"
            )
        return read_image(image)
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise FeatureInputError(
                f"image {index}: an array must be H x W x 3 uint8 RGB, got shape {image.shape} dtype {image.dtype}"
            )
        return image
    try:
        from PIL import Image

        if isinstance(image, Image.Image):
            return np.asarray(image.convert("RGB"))
    except ImportError:  # pragma: no cover - Pillow is a dependency
        pass
    raise FeatureInputError(
        f"image {index}: expected a path, an H x W x 3 uint8 array or a PIL image, got {type(image)}"
    )


class FeatureExtractor:
    """The test feature of a checkpoint of ``train.py`` for any images.

    Args:
        checkpoint: a ``.ckpt`` file or a run folder (its newest intact checkpoint).
        device: ``auto`` (a GPU when there is one), ``cpu``, ``cuda``, ``cuda:1``...
        batch_size: images per forward pass (memory is bounded by it, not by the number of images).
        normalize: L2-normalise each feature (cosine-ready).
        flip: average each feature with that of the horizontally flipped crops (as ``eval.flip``).
        pose_estimator: for images given without keypoints to a pose-trained model: ``auto``
            (MediaPipe when installed), ``none`` (never), or a callable image -> (18, 3) or None.
        progress: show a progress bar; None: for lists longer than :data:`PROGRESS_FROM`.
        pipeline: where the crops are cut: ``cpu`` (OpenCV, image by image) or ``device`` (one batched
            ``grid_sample`` on ``device``, as ``data.pipeline=device``; the crops agree within the
            tolerance of :mod:`reid.data.device_crops`).

    Batches and rounding: an image's feature depends on the images it is batched with, by
    float32 rounding only. The CPU kernels (oneDNN convolutions and the BLAS ones alike) order
    their sums by batch size, so an image extracted alone and in a batch differ by up to
    :data:`BATCH_TOLERANCE` (1e-5) times ``max(1, largest |feature|)`` (docs/benchmarks.md gives the
    measured sizes). Exact results would need one image per forward pass, so compare features
    with that tolerance, not bit for bit. The GPU's kernels (cuDNN, with TF32 convolutions by
    default) also depend on the batch size and have not been measured against it.
    """

    def __init__(
        self,
        checkpoint: str | os.PathLike,
        device: str | torch.device = "auto",
        batch_size: int = 64,
        normalize: bool = False,
        flip: bool = False,
        pose_estimator: Any = "auto",
        progress: bool | None = None,
        pipeline: str = "cpu",
    ) -> None:
        from omegaconf import OmegaConf

        from reid.data.device_batch import PIPELINES
        from reid.data.transforms import SampleTransform
        from reid.lit.module import ReIDModule

        if int(batch_size) < 1:
            raise FeatureInputError(f"batch_size must be >= 1, got {batch_size}")
        if pipeline not in PIPELINES:
            raise FeatureInputError(f"pipeline must be one of {', '.join(PIPELINES)}, got {pipeline!r}")
        self.pipeline = pipeline
        path = Path(checkpoint)
        if path.is_dir() and find_resume_checkpoint(path) is None:
            raise FeatureInputError(
                f"checkpoint {path} is a directory with no checkpoint in it (looked for {path / 'checkpoints'}/"
                "last.ckpt): pass a .ckpt file, or the run folder of a train.py run (the folder holding checkpoints/)"
            )
        loaded = load_checkpoint(path)  # a file or a run folder (its newest intact checkpoint)
        stored = loaded.get(CONFIG_KEY) or {}
        if "model" not in stored or "data" not in stored:
            raise CheckpointLoadError(
                f"{path} holds no stored run config ('{CONFIG_KEY}'): it was not written by this project's train.py"
            )
        self.config = OmegaConf.create(stored)
        data = self.config.data
        if str(device) == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        # built from the stored model config: memory format and all, as evaluate.py builds it
        self.module = ReIDModule.from_checkpoint(loaded, path).eval().to(self.device)
        # (h, w) pairs: the stored config passed the schema's checks when it was trained
        self.whole_size = cast(tuple[int, int], tuple(int(v) for v in data.whole_size))
        self.part_size = cast(tuple[int, int], tuple(int(v) for v in data.part_size))
        self.beta = float(data.beta)
        self.regions = str(self.config.model.get("regions", data.get("regions", "pose")))
        pose = data.get("pose") or {}
        self.min_conf = float(pose.get("min_conf", 0.1))
        self.min_joints = int(pose.get("min_joints", 6))
        self.part_visibility = str(pose.get("visibility", "confidence"))
        max_outside = pose.get("max_outside", 0.25)
        self.max_outside = None if max_outside is None else float(max_outside)
        # both are mappings in the schema, so to_container gives dicts
        self.strips = cast(dict[str, Any], OmegaConf.to_container(data.get("strips") or {}, resolve=True))
        augment = cast(dict[str, Any], OmegaConf.to_container(data.get("augment") or {}, resolve=True))
        self.augment = augment
        self.transform = SampleTransform(train=False, **augment)
        self.batch_size = int(batch_size)
        self.normalize = bool(normalize)
        self.flip = bool(flip)
        self.progress = progress
        self._estimator_choice = pose_estimator
        self._estimator: Any = None
        self._weights_digest: str | None = None
        self.last_counts: dict[str, int] = {}

    @property
    def feature_dim(self) -> int:
        """D, the length of one feature."""
        # Module.__getattr__ is typed Tensor | Module; the network's feature_dim is an int
        return int(cast(Any, self.module.net).feature_dim)

    def weights_digest(self) -> str:
        """SHA-256 of the network's weights (names, dtypes, shapes, values): the checkpoint's content identity.

        The same whatever the file's name, date or the device it runs on; computed once.
        """
        if self._weights_digest is None:
            digest = hashlib.sha256()
            for name, tensor in self.module.state_dict().items():
                value = tensor.detach().cpu().contiguous()
                digest.update(f"{name}|{value.dtype}|{tuple(value.shape)}|".encode())
                # raw bytes through a uint8 view: works for every dtype (bf16 has no numpy twin)
                digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
            self._weights_digest = digest.hexdigest()
        return self._weights_digest

    def input_settings(self) -> dict[str, Any]:
        """Every setting besides the weights that changes a feature, as plain values (the device is not one).

        Sizes, β, regions, the pose thresholds, the strips, the evaluation transform's options
        (normalisation), L2 normalisation, flip averaging, which pose estimator fills in
        missing keypoints, and where the crops are cut.
        """
        estimator = self._estimator_choice
        if callable(estimator):
            estimator = f"callable {getattr(estimator, '__module__', '?')}.{getattr(estimator, '__qualname__', '?')}"
        elif estimator == "auto":
            # auto means MediaPipe only where it is installed: installing it changes the features
            estimator = "auto:" + ("mediapipe" if importlib.util.find_spec("mediapipe") is not None else "none")
        return {
            "whole_size": list(self.whole_size),
            "part_size": list(self.part_size),
            "beta": self.beta,
            "regions": self.regions,
            "min_conf": self.min_conf,
            "min_joints": self.min_joints,
            "max_outside": self.max_outside,
            "part_visibility": self.part_visibility,
            "strips": self.strips,
            "augment": self.augment,
            "normalize": self.normalize,
            "flip": self.flip,
            "pose_estimator": str(estimator),
            # the device path's crops agree with OpenCV's within a tolerance, not bit for bit
            "pipeline": self.pipeline,
        }

    # ------------------------------------------------------------------ pose
    def _pose_estimator(self) -> Any:
        if self._estimator is not None or self._estimator_choice in (None, "none"):
            return self._estimator
        if callable(self._estimator_choice):
            self._estimator = self._estimator_choice
        elif self._estimator_choice == "auto":
            from reid.pose.extract import PoseEstimatorUnavailable, build_estimator

            try:
                self._estimator = build_estimator("mediapipe")
            except PoseEstimatorUnavailable:
                self._estimator_choice = "none"
        else:
            raise FeatureInputError(
                f"pose_estimator must be 'auto', 'none' or a callable, got {self._estimator_choice!r}"
            )
        return self._estimator

    def _keypoints(self, given: KeypointInput, image: np.ndarray, index: int) -> tuple[np.ndarray | None, str]:
        """The keypoints of one image and where they came from (given, estimated, none)."""
        from reid.pose import read_openpose_json

        height, width = image.shape[:2]
        if given is None:
            estimator = self._pose_estimator()
            if estimator is None:
                return None, "none"
            found = estimator(image)
            return (None, "none") if found is None else (np.asarray(found, dtype=np.float64), "estimated")
        if isinstance(given, (str, os.PathLike)):
            keypoints = read_openpose_json(given, image_size=(width, height), min_conf=self.min_conf)
            return keypoints, "given" if keypoints is not None else "none"
        keypoints = np.asarray(given, dtype=np.float64)  # as the JSON reader gives them: same boxes to the bit
        if keypoints.shape != (18, 3):
            raise FeatureInputError(
                f"keypoints {index}: expected an (18, 3) COCO-18 array, got shape {keypoints.shape}"
            )
        return keypoints, "given"

    # ------------------------------------------------------------------ batches
    def _crops(self, images: Sequence[np.ndarray], keypoints: Sequence[np.ndarray | None]) -> tuple[Tensor, Tensor]:
        from reid.data.crops import crop_regions
        from reid.pose import regions_for_images, strip_regions

        sizes = [(image.shape[1], image.shape[0]) for image in images]
        if self.regions == "strips":
            boxes = np.stack([strip_regions(w, h, self.beta, **self.strips) for w, h in sizes])
        else:
            batch = regions_for_images(
                [(f"image {i}", k, size) for i, (k, size) in enumerate(zip(keypoints, sizes, strict=True))],
                beta=self.beta,
                min_conf=self.min_conf,
                min_joints=self.min_joints,
                strip_options=self.strips,
                max_outside=self.max_outside,
                log_name="FeatureExtractor",
            )
            boxes = batch.boxes
            for status, count in batch.counts.items():
                self.last_counts[f"regions_{status}"] = self.last_counts.get(f"regions_{status}", 0) + int(count)
        if self.pipeline == "device":
            from reid.data.device_batch import crop_images

            return crop_images(images, boxes, self.transform, self.whole_size, self.part_size, self.device)
        wholes, parts = [], []
        for image, box in zip(images, boxes.astype(np.float32), strict=True):
            whole, part = crop_regions(image, box, whole_size=self.whole_size, part_size=self.part_size)
            whole_t, part_t = self.transform(whole, part, box)
            wholes.append(whole_t)
            parts.append(part_t)
        return torch.stack(wholes), torch.stack(parts)

    @torch.inference_mode()
    def _features(self, whole: Tensor, parts: Tensor, part_confidence: np.ndarray) -> dict[str, Tensor | None]:
        """Feature, branch features and mu of a batch (flip-averaged with ``flip``), given its parts' visibility."""
        whole, parts = whole.to(self.device), parts.to(self.device)
        keypoints = keypoint_inputs(self.module.net, torch.from_numpy(part_confidence), self.device)
        passes = [self.module(whole, parts, **keypoints)]
        if self.flip:
            passes.append(self.module(whole.flip(-1), parts.flip(-1), **keypoints))

        def mean(values: list[Tensor | None]) -> Tensor | None:
            present = [v for v in values if v is not None]
            if len(present) != len(values):
                return None
            # sum() is typed Tensor | Literal[0]: with at least one pass it is a Tensor
            return (cast(Tensor, sum(present)) / len(present)).float().cpu()

        feature = mean([output.feature for output in passes])
        assert feature is not None
        return {
            "feature": F.normalize(feature, dim=1) if self.normalize else feature,
            "global": mean([output.global_feature for output in passes]),
            "parts": mean([output.part_features for output in passes]),
            "mu": mean([output.part_weights for output in passes]),
        }

    def _chunks(self, n: int) -> Iterator[range]:
        for start in range(0, n, self.batch_size):
            yield range(start, min(n, start + self.batch_size))

    def __call__(
        self, images: Sequence[ImageInput] | ImageInput, keypoints: Sequence[KeypointInput] | None = None
    ) -> Tensor:
        """The ``(N, D)`` features of ``images`` (on the CPU, float32); arguments as :meth:`extract`."""
        return self.extract(images, keypoints).feature

    def extract(
        self, images: Sequence[ImageInput] | ImageInput, keypoints: Sequence[KeypointInput] | None = None
    ) -> ExtractedFeatures:
        """The features of ``images`` with the branch features and part visibilities beside them (CPU, float32).

        Args:
            images: paths, H x W x 3 uint8 RGB arrays or PIL images (or one of them).
            keypoints: per image an (18, 3) COCO-18 array, an OpenPose JSON path, or None; None
                for all: estimated with MediaPipe when installed, else the canonical-pose /
                strip fallback, counted in a warning. Ignored by strip-trained models.
        """
        single = isinstance(images, (str, os.PathLike, np.ndarray)) or type(images).__name__.endswith("ImageFile")
        if single or not isinstance(images, Sequence) and hasattr(images, "convert"):
            images = [images]
        images = list(images)
        if keypoints is None:
            keypoints = [None] * len(images)
        keypoints = list(keypoints)
        if len(keypoints) != len(images):
            raise FeatureInputError(f"{len(images)} images but {len(keypoints)} keypoint entries")
        self.last_counts = {"images": len(images), "keypoints_given": 0, "keypoints_estimated": 0, "keypoints_none": 0}
        show = self.progress if self.progress is not None else len(images) > PROGRESS_FROM
        chunks: Iterable[range] = self._chunks(len(images))
        if show:
            from rich.progress import track

            chunks = track(list(chunks), description="features")
        out: list[dict[str, Tensor | None]] = []
        confidences: list[np.ndarray] = []
        for chunk in chunks:
            arrays = [_as_rgb_array(images[i], i) for i in chunk]
            joints = []
            for i, image in zip(chunk, arrays, strict=True):
                found, source = (
                    (None, "unused") if self.regions == "strips" else self._keypoints(keypoints[i], image, i)
                )
                if source != "unused":
                    self.last_counts[f"keypoints_{source}"] += 1
                joints.append(found)
            whole, parts = self._crops(arrays, joints)
            chunk_confidence = [region_confidence(j, self.part_visibility, self.min_conf) for j in joints]
            out.append(self._features(whole, parts, np.stack(chunk_confidence)))
            confidences += chunk_confidence
        missing = self.last_counts["keypoints_none"]
        if self.regions == "pose" and missing:
            log.warning(
                "%d of %d images had no keypoints (none given, %s): their regions come from the canonical-pose / "
                "strip fallback, which this pose-trained model was not trained on; pass keypoints for better features",
                missing,
                len(images),
                "no pose estimator (install MediaPipe: make pose)" if self._estimator is None else "no person found",
            )
        if not out:
            empty = torch.zeros(0, self.feature_dim)
            return ExtractedFeatures(empty, empty, empty, None, torch.zeros(0, 4))

        def joined(key: str) -> Tensor | None:
            values = [o[key] for o in out]
            return None if any(v is None for v in values) else torch.cat(values)  # type: ignore[arg-type]

        feature, global_feature, part_features = joined("feature"), joined("global"), joined("parts")
        assert feature is not None and global_feature is not None and part_features is not None
        return ExtractedFeatures(
            feature, global_feature, part_features, joined("mu"), torch.from_numpy(np.stack(confidences))
        )
