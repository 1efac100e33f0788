"""Offline keypoint extraction: `reid-extract-pose data=<name>` writes OpenPose COCO-18 JSON per image.

Usage (``key=value`` as every tool; ``reid-extract-pose --help`` lists the options)::

    reid-extract-pose data=market [data_dir=<folder>] [out=<folder>] [overwrite=false] [limit=N] \
        [estimator=mediapipe] [+estimator_options.min_visibility=0.5] [+estimator_options.margin=0.5]

Every image of the data set (train, query and gallery, each path once) goes through a pose
estimator; the result is written as ``<out>/<image parent folder>/<stem>_keypoints.json`` (the
split folder instead of the image's for Occluded-REID, whose splits share file names) in
OpenPose's format, ``{"version": 1.3, "people": [{"pose_keypoints_2d": [54 numbers]}]}``, with an
empty ``people`` list when nobody was found: exactly what :class:`reid.pose.OpenPoseJsonSource`
reads.  ``out`` defaults to ``data.pose.path`` or else ``<data set folder>/keypoints``, the folder
the data module reads by default.  A run can be stopped and restarted: images whose JSON exists
are skipped (``overwrite=true`` redoes them) and every file is written atomically.

The estimator is pluggable (:class:`reid.pose.extract.PoseEstimator`,
:func:`reid.pose.extract.register_estimator`).  The one shipped is MediaPipe Pose (legacy
``solutions`` API, model inside the wheel, no download), an optional install: ``make pose``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reid.conf.tool import option, run_tool
from reid.data.io import read_image
from reid.data.records import ReIDDataset
from reid.pose.extract import (
    ExtractionError,
    PoseEstimator,
    build_estimator,
    keypoint_json_path,
    openpose_document,
    write_json_atomically,
)

logger = logging.getLogger(__name__)


@dataclass
class ExtractionCounts:
    """What a run did: JSON files written, images skipped because their JSON existed, and failures."""

    done: int = 0
    skipped_existing: int = 0
    no_person: int = 0
    failed: list[str] = field(default_factory=list)


def dataset_image_paths(dataset: ReIDDataset) -> list[str]:
    """Image paths of train, query and gallery in that order, each once."""
    seen: dict[str, None] = {}
    for split in (dataset.train, dataset.query, dataset.gallery):
        for record in split:
            seen.setdefault(str(record.image_path), None)
    return list(seen)


def _check_unique_outputs(image_paths: Sequence[str], out: Path, by_split_folder: bool = False) -> None:
    """Two images with the same parent folder name and stem would overwrite each other's JSON."""
    owners: dict[Path, str] = {}
    for image_path in image_paths:
        target = keypoint_json_path(out, image_path, by_split_folder=by_split_folder)
        if target in owners:
            raise ExtractionError(
                f"{owners[target]} and {image_path} both map to {target} (same folder name and file stem); "
                "the OpenPose JSON layout cannot tell them apart: rename one of them"
            )
        owners[target] = image_path


def extract_keypoints(
    image_paths: Iterable[str],
    out: str | Path,
    estimator: PoseEstimator,
    *,
    overwrite: bool = False,
    limit: int | None = None,
    progress: bool = True,
    by_split_folder: bool = False,
) -> ExtractionCounts:
    """Runs `estimator` on every image and writes one OpenPose JSON per image under `out`.

    Args:
        image_paths: the images (duplicates are processed once).
        out: the keypoint folder; files go to ``<out>/<parent folder>/<stem>_keypoints.json``.
        estimator: image -> (18, 3) joints or None.
        overwrite: redo images whose JSON exists (default: skip them, so a run can resume).
        limit: process only the first `limit` images (None: all).
        progress: show a rich progress bar.
        by_split_folder: write ``<out>/<split folder>/<stem>_keypoints.json`` (the folder above the
            image's): for a data set whose identity folders repeat file names across splits (the
            loader says so in ``dataset.extras["keypoints_by_split_folder"]``: Occluded-REID).

    Returns:
        The counts; unreadable images and estimator errors are listed in ``failed``, logged by
        name, and get no JSON (so a later run retries them).

    Raises:
        ValueError: two images would share one JSON path, or `limit` is negative.
    """
    paths = list(dict.fromkeys(str(p) for p in image_paths))
    if limit is not None:
        if limit < 0:
            raise ExtractionError(f"limit={limit} must be >= 0")
        paths = paths[:limit]
    out = Path(out)
    _check_unique_outputs(paths, out, by_split_folder)
    counts = ExtractionCounts()

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("keypoints"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not progress, transient=False) as bar:
        task = bar.add_task("keypoints", total=len(paths))
        for image_path in paths:
            target = keypoint_json_path(out, image_path, by_split_folder=by_split_folder)
            if target.is_file() and not overwrite:
                counts.skipped_existing += 1
            else:
                try:
                    keypoints = estimator(read_image(image_path))
                    document = openpose_document(keypoints)
                except (OSError, ValueError, RuntimeError) as err:
                    counts.failed.append(image_path)
                    logger.warning("%s: no keypoints written (%s)", image_path, err)
                else:
                    write_json_atomically(target, document)
                    counts.done += 1
                    if keypoints is None:
                        counts.no_person += 1
            bar.advance(task)

    logger.info(
        "keypoints in %s: %d written (%d with no person found), %d skipped because their JSON exists%s, %d failed",
        out,
        counts.done,
        counts.no_person,
        counts.skipped_existing,
        "" if overwrite else " (overwrite=true redoes them)",
        len(counts.failed),
    )
    if counts.failed:
        logger.warning("failed images (re-run to retry them): %s", ", ".join(counts.failed))
    return counts


def default_output_dir(pose_path: str | Path | None, dataset: ReIDDataset) -> Path:
    """``data.pose.path`` (openpose_json source) when set, else ``<data set folder>/keypoints``.

    The latter is where the data module looks when ``data.pose.path`` is null.
    """
    if pose_path:
        return Path(pose_path)
    return Path(dataset.root) / "keypoints"


@dataclass
class ExtractOptions:
    """The options of ``reid-extract-pose`` (``key=value``, as every tool)."""

    data: str = option("synthetic", "the data set: an option of conf/data (market, duke, ...)")
    data_dir: str | None = option(None, "paths.data_dir (default: $REID_DATA or ./data)")
    overrides: list[str] = option([], "other changes to the training config, e.g. [data.pose.path=kp/]")
    out: str | None = option(None, "where the JSON files go (default: data.pose.path, else <data set>/keypoints)")
    overwrite: bool = option(False, "extract again images that already have a keypoint file")
    limit: int | None = option(None, "extract at most this many images (a trial run)", low=1)
    estimator: str = option("mediapipe", "the pose estimator (reid.pose.extract.register_estimator)")
    estimator_options: dict[str, Any] = option(
        {}, "the estimator's options, added as +estimator_options.min_visibility=0.3"
    )


def extract_dataset(options: ExtractOptions) -> ExtractionCounts:
    """Composes the training config for ``options.data``, then extracts keypoints for the data set's images."""
    # Built before the data set is loaded, so a missing package fails at once.
    estimator = build_estimator(options.estimator, **options.estimator_options)

    from omegaconf import OmegaConf

    from reid.conf import compose_config
    from reid.data.datasets import load

    data_dir = [f"paths.data_dir={options.data_dir}"] if options.data_dir else []
    cfg = compose_config([f"data={options.data}", *data_dir, *options.overrides])
    dataset_options = OmegaConf.to_container(cfg.data.options, resolve=True) or {}
    dataset = load(str(cfg.data.name), str(cfg.data.root), **dataset_options)  # type: ignore[arg-type]
    pose = cfg.data.get("pose", {})
    # A pose_transfer_csv path names a CSV file, not a folder JSON files can go to.
    pose_path = pose.get("path") if pose.get("source", "openpose_json") == "openpose_json" else None
    out = Path(options.out) if options.out else default_output_dir(pose_path, dataset)
    paths = dataset_image_paths(dataset)
    logger.info("%s: %d images, keypoints -> %s (estimator %s)", dataset.name, len(paths), out, options.estimator)
    return extract_keypoints(
        paths,
        out,
        estimator,
        overwrite=options.overwrite,
        limit=options.limit,
        by_split_folder=bool(dataset.extras.get("keypoints_by_split_folder")),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``reid-extract-pose`` / ``python -m reid.tools.extract_pose``: 0, or 2 with one ``error:`` line."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return run_tool(_extract_command, ExtractOptions, "extract-pose", argv)


def _extract_command(options: ExtractOptions) -> int:
    extract_dataset(options)  # the counts are in the log
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
