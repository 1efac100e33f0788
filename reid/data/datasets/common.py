"""Helpers shared by the data set loaders: locating a data set folder, relabelling, count checks."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from reid.data.datasets.registry import not_found
from reid.data.records import Record, ReIDDataset
from reid.errors import ReidError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})
"""File suffixes (lower-cased) read as images; anything else in an image folder is ignored and counted."""


class DatasetFormatError(ReidError, ValueError):
    """A data set file or file name that does not follow the data set's format (the message names it)."""


def is_image_file(path: Path) -> bool:
    """True for a regular file whose suffix is one of :data:`IMAGE_SUFFIXES` (case-insensitive)."""
    return path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()


def is_broken_link(path: Path) -> bool:
    """True for a symbolic link that leads to no file: a loop, or a target that is gone.

    Such an entry with an image suffix is an image the data set lists but cannot be read: it is
    kept as a record, so that set-up counts it as a bad sample (``data.on_bad_sample``) instead
    of ignoring it like a sub-folder.
    """
    return path.is_symlink() and not path.exists()


def unique_paths(paths: Iterable[Path]) -> list[Path]:
    """The paths in order with repeats removed (``root`` may coincide with a candidate)."""
    seen: set[Path] = set()
    result = []
    for path in paths:
        if path not in seen:
            seen.add(path)
            result.append(path)
    return result


def locate_folder(
    candidates: Sequence[Path],
    required: Sequence[str],
    *,
    title: str,
    layout: str,
    source: str,
) -> Path:
    """The first candidate folder that holds every ``required`` entry.

    Args:
        candidates: folders to try, in order of preference.
        required: names (relative paths) that must exist inside the folder.
        title, layout, source: texts for the error when no candidate fits.

    Raises:
        DatasetNotFoundError: naming every candidate and what it lacked.
    """
    tried: list[tuple[Path, str]] = []
    for folder in unique_paths(candidates):
        if not folder.is_dir():
            tried.append((folder, "does not exist"))
            continue
        missing = [name for name in required if not (folder / name).exists()]
        if missing:
            tried.append((folder, "lacks " + ", ".join(missing)))
            continue
        return folder
    raise not_found(title, tried, layout, source)


def relabel(records: Sequence[Record]) -> list[Record]:
    """Maps the records' pids to 0..q-1 in sorted order of the original pids."""
    label_of = {pid: label for label, pid in enumerate(sorted({r.pid for r in records}))}
    return [Record(r.image_path, label_of[r.pid], r.camid) for r in records]


def existing_keypoint_dir(folder: Path) -> Path | None:
    """``folder/keypoints`` when that folder exists, else None."""
    keypoints = folder / "keypoints"
    return keypoints if keypoints.is_dir() else None


def compare_with_official(
    dataset: ReIDDataset,
    official: Mapping[str, tuple[int | None, int | None]],
    title: str,
) -> bool:
    """Logs a warning when split sizes differ from the official release's.

    Args:
        dataset: the loaded data set.
        official: ``split -> (images, ids)``; ``None`` skips that number.
        title: the release's name for the message.

    Returns:
        True when every given number matches.
    """
    differences = []
    for split, (images, ids) in official.items():
        records = getattr(dataset, split)
        found_images, found_ids = len(records), len({r.pid for r in records})
        if images is not None and found_images != images:
            differences.append(f"{split} {found_images} images (official {images})")
        if ids is not None and found_ids != ids:
            differences.append(f"{split} {found_ids} ids (official {ids})")
    if differences:
        log.warning(
            "%s at %s differs from the official release: %s; fine for a subset, otherwise the copy is incomplete",
            title,
            dataset.root,
            ", ".join(differences),
        )
    return not differences
