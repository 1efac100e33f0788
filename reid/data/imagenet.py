"""ImageNet (ILSVRC2012) in class folders, ``train/<wnid>/*.JPEG`` and ``val/<wnid>/*``, as (path, class) lists.

Only this layout is read (the one the pre-training issue names). The official flat validation
folder with ``LOC_val_solution.csv`` or ``ILSVRC2012_validation_ground_truth.txt`` is not: sort it
into ``val/<wnid>/`` first (e.g. with the widely used ``valprep.sh``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from reid.errors import ReidError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
SPLITS = ("train", "val")


class ImageNetLayoutError(ReidError, FileNotFoundError):
    """An ImageNet folder that does not have the ``train/<wnid>/``, ``val/<wnid>/`` layout."""


def _class_folders(split_dir: Path) -> list[str]:
    return sorted(entry.name for entry in os.scandir(split_dir) if entry.is_dir() and not entry.name.startswith("."))


def _images_in(folder: Path) -> list[str]:
    # os.scandir rather than Path.glob: no Path object per entry of the 1.28M files
    return sorted(
        entry.path
        for entry in os.scandir(folder)
        if entry.is_file() and os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES
    )


def class_index(root: str | Path) -> dict[str, int]:
    """The class of every wnid: its position among the sorted folder names of ``root/train``.

    Raises:
        ImageNetLayoutError: ``root/train`` is missing or holds no class folders.
    """
    train_dir = Path(root) / "train"
    if not train_dir.is_dir():
        raise ImageNetLayoutError(
            f"ImageNet folder {Path(root)} has no train/ folder: point paths.data_dir at the folder "
            "holding train/<wnid>/*.JPEG and val/<wnid>/*.JPEG"
        )
    wnids = _class_folders(train_dir)
    if not wnids:
        raise ImageNetLayoutError(
            f"{train_dir} has no class folders: expected train/<wnid>/*.JPEG (e.g. train/n01440764/)"
        )
    return {wnid: index for index, wnid in enumerate(wnids)}


def load_imagenet_folder(root: str | Path, split: str, classes: dict[str, int] | None = None) -> list[tuple[str, int]]:
    """Every image of one split as ``(path, class_index)``, sorted by class then file name.

    Files ending in ``.JPEG``, ``.jpg`` or ``.png`` (any case) are read; other files are ignored
    with a count in the log. Class folders without images are kept in the class numbering (so
    indices match the full 1000-class mapping) and counted in a warning.

    Args:
        root: the folder holding ``train/`` and ``val/``.
        split: ``"train"`` or ``"val"``.
        classes: wnid -> index; default :func:`class_index` (sorted ``train/`` folder names).

    Returns:
        ``[(image_path, class_index), ...]``.

    Raises:
        ValueError: an unknown split.
        ImageNetLayoutError: a missing split folder, a split without any image, or a ``val/``
            wnid that is not a ``train/`` class.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown ImageNet split {split!r}; use one of {SPLITS}")
    root = Path(root)
    classes = class_index(root) if classes is None else classes
    split_dir = root / split
    if not split_dir.is_dir():
        raise ImageNetLayoutError(
            f"ImageNet folder {root} has no {split}/ folder: expected {split}/<wnid>/*.JPEG "
            "(sort a flat val/ folder into class folders first)"
        )
    wnids = _class_folders(split_dir)
    unknown = [wnid for wnid in wnids if wnid not in classes]
    if unknown:
        raise ImageNetLayoutError(
            f"{split_dir} has {len(unknown)} class folder(s) not in {root / 'train'} (first: {unknown[0]}): "
            "train/ and val/ must use the same wnid folder names"
        )
    samples: list[tuple[str, int]] = []
    empty: list[str] = []
    ignored = 0
    for wnid in wnids:
        folder = split_dir / wnid
        images = _images_in(folder)
        ignored += sum(1 for entry in os.scandir(folder) if entry.is_file()) - len(images)
        if not images:
            empty.append(wnid)
        samples.extend((path, classes[wnid]) for path in images)
    if empty:
        log.warning("%s: %d class folder(s) without images (first: %s)", split_dir, len(empty), empty[0])
    if ignored:
        log.warning("%s: ignored %d file(s) not ending in %s", split_dir, ignored, "/".join(IMAGE_SUFFIXES))
    if not samples:
        raise ImageNetLayoutError(
            f"{split_dir} holds no images: expected {split}/<wnid>/*.JPEG (.JPEG, .jpg or .png files)"
        )
    log.info("ImageNet %s: %d images in %d of %d classes", split, len(samples), len(wnids) - len(empty), len(classes))
    return samples
