"""A data set's crop index, built once at set-up: every image checked, its keypoints read, its five regions computed."""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import numpy as np
from annotated_types import Ge, Interval

from reid.data.crop_dataset import CropDataset
from reid.data.device_batch import Pipeline
from reid.data.image_cache import DecodedImages
from reid.data.io import VERIFY_MODES, CorruptImageError, image_size, verify_image
from reid.data.records import Record, ReIDDataset
from reid.data.transforms import SampleTransform
from reid.data.truth import truth_path
from reid.errors import ConfigError
from reid.names import REGION_MODES
from reid.pose import KeypointFormatError, build_keypoint_source, regions_for_images, strip_regions
from reid.pose.readers import KeypointFormat
from reid.pose.regions import DEFAULT_MAX_OUTSIDE, PartVisibility, region_confidence

log = logging.getLogger(__name__)

# Threads that check images at set-up: Pillow releases the GIL while decoding, so they overlap.
SETUP_THREADS = min(8, os.cpu_count() or 1)
# Fewer images than this are checked in the calling thread (a pool would cost more than it saves).
SETUP_THREAD_MIN_IMAGES = 64
KEYPOINT_FIX = "or set data.on_bad_sample=skip to drop such images at set-up"


#: what set-up does with an unreadable image or keypoint file: stop naming it, or drop it with a count
BadSamplePolicy = Literal["error", "skip"]
BAD_SAMPLE_POLICIES: tuple[str, ...] = get_args(BadSamplePolicy)


def check_index_options(regions: str, on_bad_sample: str, verify_images: str, pose: Mapping[str, Any] | None) -> None:
    """Checks ``data.regions``, ``data.on_bad_sample``, ``data.verify_images`` and the ``data.pose`` keys.

    Raises:
        ConfigError: the first option with a value or key the index does not know.
    """
    if regions not in REGION_MODES:
        raise ConfigError([f"data.regions must be 'pose' or 'strips', got {regions!r}"])
    if on_bad_sample not in BAD_SAMPLE_POLICIES:
        raise ConfigError([f"data.on_bad_sample must be 'error' or 'skip', got {on_bad_sample!r}"])
    if verify_images not in VERIFY_MODES:
        raise ConfigError([f"data.verify_images must be one of {', '.join(VERIFY_MODES)}, got {verify_images!r}"])
    unknown_pose_keys = sorted(set(pose or {}) - set(POSE_KEYS))
    if unknown_pose_keys:
        raise ConfigError([f"unknown data.pose keys {unknown_pose_keys}; known: {', '.join(POSE_KEYS)}"])


def keypoint_options(
    source: KeypointFormat = "openpose_json",
    path: str | list[str] | None = None,
    min_conf: Annotated[float, Interval(ge=0, le=1)] = 0.1,
    min_joints: Annotated[int, Interval(ge=0, le=18)] = 6,
    max_outside: Annotated[float | None, Ge(0)] = DEFAULT_MAX_OUTSIDE,
    visibility: PartVisibility = "confidence",
) -> dict[str, Any]:
    """The ``data.pose`` options, declared here once: where keypoints come from and when they are trusted.

    Args:
        source: the keypoint format (:data:`reid.pose.KEYPOINT_SOURCES`): ``openpose_json`` (one
            OpenPose JSON per image), ``pose_transfer_csv`` (the pose-transfer annotation CSV) or
            ``strips`` (no keypoints: every image takes the fixed strips).
        path: the keypoint folder or CSV file(s); None: the data set's own ``keypoints/`` folder.
        min_conf: joints below this confidence are filled in from a canonical pose.
        min_joints: with fewer confident joints than this, an image falls back to the fixed strips.
        max_outside: a detected joint farther outside the image than this fraction of its width or
            height is treated as undetected and filled in from a canonical pose; None keeps every joint.
        visibility: how a part's joints become its visibility (the batches' ``part_confidence``: the
            visibility loss's label, keypoint matching, ``inter_source=keypoints``):
            ``confidence`` (their mean confidence) or ``detected`` (the share above ``min_conf``);
            :data:`reid.pose.regions.PART_VISIBILITIES`.
    """
    return {
        "source": source,
        "path": path,
        "min_conf": min_conf,
        "min_joints": min_joints,
        "max_outside": max_outside,
        "visibility": visibility,
    }


#: the keys of ``data.pose`` (the parameters of :func:`keypoint_options`)
POSE_KEYS: tuple[str, ...] = tuple(inspect.signature(keypoint_options).parameters)


def pose_options(pose: Mapping[str, Any] | None) -> dict[str, Any]:
    """``data.pose`` over its defaults (:func:`keypoint_options`)."""
    return keypoint_options(**(pose or {}))


@dataclass(frozen=True)
class IndexOptions:
    """How set-up finds the five regions of every image and treats a bad sample (the ``data`` options)."""

    name: str
    regions: str
    beta: float
    pose: Mapping[str, Any]
    strips: Mapping[str, Any]
    on_bad_sample: str
    verify_images: str


@dataclass
class SplitRegions:
    """One split's kept records, their boxes (N, 5, 4), keypoint confidence per part (N, 4) and counts."""

    records: list[Record]
    boxes: np.ndarray
    part_confidence: np.ndarray
    counts: dict[str, int]


def keypoint_source(dataset: ReIDDataset, regions: str, pose: Mapping[str, Any]) -> Any:
    """The keypoints of ``dataset`` as ``data.pose`` says, or None for fixed strips.

    Raises:
        FileNotFoundError: regions from keypoints, but the data set has none and no path is given.
    """
    if regions == "strips" or pose["source"] == "strips":
        return None
    path = pose.get("path") or dataset.keypoint_dir
    if path is None:
        raise FileNotFoundError(
            f"data set '{dataset.name}' has no keypoints (looked for {dataset.root / 'keypoints'}): "
            "extract them with `reid-extract-pose data=...`, point data.pose.path at them, "
            "or train on fixed strips with data.pose.source=strips"
        )
    return build_keypoint_source(pose["source"], path, min_conf=float(pose["min_conf"]))


def image_sizes(records: Sequence[Record], verify_images: str) -> list[tuple[int, int] | CorruptImageError]:
    """``(width, height)`` of every image, or the :class:`CorruptImageError` it raised, in order.

    ``verify_images=decode`` decodes each image fully (on a thread pool), ``header`` reads headers only.
    """
    check = verify_image if verify_images == "decode" else image_size

    def attempt(path: str) -> tuple[int, int] | CorruptImageError:
        try:
            return check(path)
        except CorruptImageError as err:
            return err

    paths = [record.image_path for record in records]
    # Reading a header costs less than handing it to a thread; decoding overlaps well.
    if check is image_size or SETUP_THREADS <= 1 or len(paths) < SETUP_THREAD_MIN_IMAGES:
        return [attempt(path) for path in paths]
    with ThreadPoolExecutor(max_workers=SETUP_THREADS, thread_name_prefix="verify-images") as pool:
        return list(pool.map(attempt, paths))


def split_regions(options: IndexOptions, split: str, records: Sequence[Record], source: Any) -> SplitRegions:
    """Boxes of every record (computed once); bad samples raise or are dropped with a count.

    A bad sample is an image that cannot be read (checked as ``verify_images`` says) or a
    keypoint file that is malformed or holds NaN.  ``error`` raises the first one in record
    order, naming the file, the fix, and how many more the split has; ``skip`` logs the counts.
    """
    kept: list[Record] = []
    items: list[tuple[str, np.ndarray | None, tuple[int, int]]] = []
    bad_images: list[CorruptImageError] = []
    bad_keypoints: list[KeypointFormatError] = []
    first_bad: CorruptImageError | KeypointFormatError | None = None
    for record, size in zip(records, image_sizes(records, options.verify_images), strict=True):
        if isinstance(size, CorruptImageError):
            bad_images.append(size)
            first_bad = first_bad or size
            continue
        try:
            keypoints = source.get(record.image_path, image_size=size) if source is not None else None
        except KeypointFormatError as err:
            bad_keypoints.append(err)
            first_bad = first_bad or err
            continue
        kept.append(record)
        items.append((record.image_path, keypoints, size))
    pose = pose_options(options.pose)
    visibility, min_conf = str(pose["visibility"]), float(pose["min_conf"])
    part_confidence = (
        np.stack([region_confidence(keypoints, visibility, min_conf) for _, keypoints, _ in items])
        if items
        else np.zeros((0, 4), dtype=np.float32)
    )
    skipped = len(bad_images) + len(bad_keypoints)
    tally = f"{len(bad_images)} unreadable images, {len(bad_keypoints)} bad keypoint files"
    if first_bad is not None and options.on_bad_sample == "error":
        message = str(first_bad)
        if isinstance(first_bad, KeypointFormatError):
            message = f"{message}; {KEYPOINT_FIX}"
        if skipped > 1:
            message = f"{message} [{options.name}/{split} has {skipped} bad samples: {tally}]"
        raise type(first_bad)(message) from None
    if skipped:
        log.warning(
            "%s/%s: skipped %d bad samples (%s) of %d at set-up (data.on_bad_sample=skip); first: %s",
            options.name,
            split,
            skipped,
            tally,
            len(records),
            first_bad,
        )
        if not kept:
            raise CorruptImageError(
                f"{options.name}/{split}: all {len(records)} samples are bad and were skipped, first: {first_bad}"
            )
    skip_counts = {"skipped": skipped, "bad_images": len(bad_images), "bad_keypoints": len(bad_keypoints)}
    if source is None:
        boxes = [strip_regions(w, h, options.beta, **options.strips) for _, _, (w, h) in items]
        log.info(
            "regions for %d %s/%s: fixed strips (data.regions=%s)", len(items), options.name, split, options.regions
        )
        counts = {"pose": 0, "filled": 0, "strips": len(items), **skip_counts}
        stacked = np.stack(boxes).astype(np.float32) if boxes else np.zeros((0, 5, 4), dtype=np.float32)
        return SplitRegions(kept, stacked, part_confidence, counts)
    max_outside = options.pose.get("max_outside")
    batch = regions_for_images(
        items,
        beta=options.beta,
        min_conf=float(options.pose["min_conf"]),
        min_joints=int(options.pose["min_joints"]),
        strip_options=options.strips,
        max_outside=None if max_outside is None else float(max_outside),
        log_name=f"{options.name}/{split}",
    )
    counts = {
        **batch.counts,
        "filled_joints": batch.n_filled,
        "outside_joints": batch.n_outside,
        **skip_counts,
    }
    return SplitRegions(kept, batch.boxes.astype(np.float32), part_confidence, counts)


def build_crop_sets(
    dataset: ReIDDataset,
    splits: Mapping[str, SplitRegions],
    on_bad_sample: str,
    whole_size: tuple[int, int],
    part_size: tuple[int, int],
    augment: Mapping[str, Any],
    with_confidence: bool,
    pipeline: Pipeline = "cpu",
    image_cache_dir: str | Path | None = None,
) -> tuple[CropDataset, CropDataset]:
    """The training set and the evaluation set (queries, then the gallery) over the ``splits``' boxes.

    With ``on_bad_sample=skip`` the kept training pids are relabelled 0..q-1 (``dataset.train``
    too). ``with_confidence`` (keypoints were read) attaches each part's keypoint confidence.
    ``pipeline=device`` serves originals, boxes and draws instead of crops, from a decoded-image
    cache in ``image_cache_dir`` (None: each worker decodes the files).
    """
    train, query, gallery = splits["train"], splits["query"], splits["gallery"]
    train_recs = train.records
    if on_bad_sample == "skip":
        dataset.train = relabel(train_recs)
        train_recs = dataset.train

    def originals(records: Sequence[Record]) -> DecodedImages | None:
        if pipeline != "device" or image_cache_dir is None or not records:
            return None
        return DecodedImages.open([r.image_path for r in records], image_cache_dir, log=log.info)

    train_set = CropDataset(
        train_recs,
        train.boxes,
        SampleTransform(train=True, **augment),
        whole_size,
        part_size,
        # model.visibility_loss's pseudo-labels (keypoints, never the synthetic truth)
        part_confidence=train.part_confidence if with_confidence else None,
        pipeline=pipeline,
        images=originals(train_recs),
    )
    eval_transform = SampleTransform(train=False, **augment)
    query_recs, gallery_recs = query.records, gallery.records
    eval_set = CropDataset(
        query_recs + gallery_recs,
        np.concatenate([query.boxes, gallery.boxes]) if len(query.boxes) + len(gallery.boxes) else np.zeros((0, 5, 4)),
        eval_transform,
        whole_size,
        part_size,
        is_query=[True] * len(query_recs) + [False] * len(gallery_recs),
        indices=list(range(len(query_recs))) + list(range(len(gallery_recs))),
        part_confidence=np.concatenate([query.part_confidence, gallery.part_confidence]) if with_confidence else None,
        truth=[optional_path(truth_path(r.image_path)) for r in query_recs + gallery_recs],
        pipeline=pipeline,
        images=originals(query_recs + gallery_recs),
    )
    return train_set, eval_set


def relabel(records: Sequence[Record]) -> list[Record]:
    """Relabels training pids to 0..q-1 again after samples were skipped."""
    mapping = {pid: i for i, pid in enumerate(sorted({r.pid for r in records}))}
    return [Record(r.image_path, mapping[r.pid], r.camid) for r in records]


def optional_path(path: Path | None) -> str | None:
    """``path`` as a string, None kept."""
    return None if path is None else str(path)
