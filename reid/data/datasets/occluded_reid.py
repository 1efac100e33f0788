"""Occluded-REID (Zhuo et al., ICME 2018): occluded queries against whole-body gallery images; a test set only.

Layout, as the authors' release unpacks and as the public loaders read it (BPBReID's
``torchreid/data/datasets/image/occluded_reid.py``, from PVPM's code: ``<split>/*/*.tif``, the
identity from the file name)::

    Occluded_REID/
        occluded_body_images/<pid>/<pid>_<n>.tif   # the queries: 001/001_01.tif ... 001/001_05.tif
        whole_body_images/<pid>/<pid>_<n>.tif      # the gallery, named the same way

200 identities with 5 occluded and 5 whole-body images each (1,000 + 1,000, resized to 128x64),
taken with mobile cameras; no training split (the protocol trains on Market-1501). Rules:

- the identity is the file name's number before the first ``_``; a file in the folder of another
  identity is an error naming it; pids are kept as they are (nothing is trained on them);
- camera convention of the field: every query is camera 0 and every gallery image camera 1, so no
  gallery image is left out as "same camera" and all 5 whole-body images of the identity are true
  matches (scored with the Market protocol: CMC + mAP);
- ``.tif`` images (and ``.jpg``/``.png`` copies: PVPM's pose script converts the ``.tif`` files in
  place with ``mogrify``, so a ``.jpg`` beside a ``.tif`` of the same stem is that copy and is
  ignored, with a logged count); other files and files outside an identity folder are ignored
  with a logged count.

Keypoints: the two folders reuse the same names (``001/001_01.tif`` is in both), so the keypoint
files go under the split folder, ``Occluded_REID/keypoints/{occluded_body_images,whole_body_images}/
<stem>_keypoints.json`` (BPBReID keeps its masks the same way); ``reid-extract-pose
data=occluded_reid`` writes them there.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from pathlib import Path

from reid.data.datasets.common import (
    IMAGE_SUFFIXES,
    DatasetFormatError,
    compare_with_official,
    existing_keypoint_dir,
    is_broken_link,
    locate_folder,
)
from reid.data.datasets.registry import SYNTHETIC_HINT, DatasetNotFoundError, register
from reid.data.records import Record, ReIDDataset

log = logging.getLogger(__name__)

TIFF_SUFFIXES = frozenset({".tif", ".tiff"})
#: image suffixes of the test-only sets (lower-cased): the release's TIFF files, or JPEG/PNG copies
TEST_SET_SUFFIXES = IMAGE_SUFFIXES | TIFF_SUFFIXES
ID_PREFIX = re.compile(r"^(\d+)_")
#: the camera ids of the test-only sets' convention: queries one "camera", gallery the other
QUERY_CAMID, GALLERY_CAMID = 0, 1
#: ``dataset.extras`` key saying that keypoint files go under the split folder, not the image's folder
KEYPOINTS_BY_SPLIT_FOLDER = "keypoints_by_split_folder"

OCCLUDED_REID_FOLDER = "Occluded_REID"
OCCLUDED_REID_SPLITS = {"query": "occluded_body_images", "gallery": "whole_body_images"}
OCCLUDED_REID_LAYOUT = "<folder>/{occluded_body_images,whole_body_images}/<pid>/<pid>_<n>.tif"
OCCLUDED_REID_SOURCE = (
    "Occluded-REID is released for academic use by its authors through "
    "https://github.com/tinajia2012/ICME2018_Occluded-Person-Reidentification_datasets; "
    "unzip it and move Occluded_REID/ into {root}"
)
# (images, ids) per split: the release's README (200 persons, 5 occluded + 5 full-body images each)
OCCLUDED_REID_OFFICIAL: dict[str, tuple[int | None, int | None]] = {"query": (1000, 200), "gallery": (1000, 200)}


def _identity(path: Path, example: str, folder_pid: int | None) -> int:
    match = ID_PREFIX.match(path.name)
    if match is None:
        raise DatasetFormatError(
            f"{path}: file name does not start with '<pid>_' (like {example}); rename or remove the file"
        )
    pid = int(match[1])
    if folder_pid is not None and pid != folder_pid:
        raise DatasetFormatError(
            f"{path}: the file name says identity {pid} but the file is in the folder of identity {folder_pid}; "
            "move or rename it"
        )
    return pid


def _image_files(directory: Path, counts: Counter) -> list[Path]:
    """The images directly in ``directory``, sorted; a JPEG/PNG copy of a TIFF (same stem) is left out."""
    images: list[Path] = []
    for path in sorted(directory.iterdir()):
        if not path.is_file() and not is_broken_link(path):
            counts["sub-folders"] += 1
        elif path.suffix.lower() not in TEST_SET_SUFFIXES:
            counts["non-image files"] += 1
        else:
            images.append(path)
    tiff_stems = {path.stem for path in images if path.suffix.lower() in TIFF_SUFFIXES}
    kept = [path for path in images if path.suffix.lower() in TIFF_SUFFIXES or path.stem not in tiff_stems]
    if len(kept) < len(images):
        counts["copies of a .tif image (same stem) ignored"] += len(images) - len(kept)
    return kept


def read_identity_images(directory: Path, camid: int, *, nested: bool, example: str) -> tuple[list[Record], Counter]:
    """The records of one split folder of a test-only set, all with camera ``camid``.

    Args:
        directory: the split folder.
        camid: the camera id every image gets (:data:`QUERY_CAMID` or :data:`GALLERY_CAMID`).
        nested: images sit in one sub-folder per identity (Occluded-REID) rather than directly in
            ``directory`` (Partial-REID).
        example: a file name of the release, for the error on a name that does not parse.

    Returns:
        The records in sorted path order, and what was ignored, counted.

    Raises:
        DatasetFormatError: an image whose name does not start with ``<pid>_``, or (nested) whose
            identity differs from its folder's.
    """
    counts: Counter = Counter()
    records: list[Record] = []
    if not nested:
        for path in _image_files(directory, counts):
            records.append(Record(str(path), _identity(path, example, None), camid))
        return records, counts
    for entry in sorted(directory.iterdir()):
        if not entry.is_dir():
            counts["files outside an identity folder"] += 1
            continue
        folder_pid = int(entry.name) if entry.name.isdigit() else None
        for path in _image_files(entry, counts):
            records.append(Record(str(path), _identity(path, example, folder_pid), camid))
    return records, counts


def load_test_only_set(
    folder: Path,
    splits: dict[str, str],
    *,
    name: str,
    layout: str,
    nested: bool,
    example: str,
    source_hint: str,
) -> ReIDDataset:
    """A test-only data set (empty ``train``) from its query and gallery folders, cameras 0 and 1.

    Args:
        folder: the data set folder.
        splits: ``{"query": <folder name>, "gallery": <folder name>}``.
        name: the registry name to record.
        layout: the expected layout, one line, for the error on an empty split.
        nested: one sub-folder per identity (see :func:`read_identity_images`).
        example: a file name of the release.
        source_hint: a sentence saying how to get the files.

    Raises:
        DatasetNotFoundError: a split folder holds no usable image.
    """
    found: dict[str, list[Record]] = {}
    for split, camid in (("query", QUERY_CAMID), ("gallery", GALLERY_CAMID)):
        directory = folder / splits[split]
        records, counts = read_identity_images(directory, camid, nested=nested, example=example)
        for what, count in sorted(counts.items()):
            log.info("%s %s: %d %s", name, splits[split], count, what)
        if not records:
            raise DatasetNotFoundError(
                f"{directory} holds no usable image (expected {layout}); the copy is incomplete. {source_hint}"
            )
        found[split] = records
    return ReIDDataset(
        name=name,
        root=folder,
        train=[],
        query=found["query"],
        gallery=found["gallery"],
        protocol="market",
        keypoint_dir=existing_keypoint_dir(folder),
        extras={"test_only": True, "camera_convention": "query camid 0, gallery camid 1"},
    )


@register("occluded_reid", test_only=True)
def load_occluded_reid(root: Path) -> ReIDDataset:
    """Occluded-REID from ``root/Occluded_REID``, the same under ``ICME2018_Occluded-Person-Reidentification_datasets/``
    or ``occluded_reid/``, ``root/occluded_reid`` or ``root`` itself (the first holding both image folders).

    Rules and the keypoint layout are in the module docstring; ``train`` is empty (a test set only).
    """
    root = Path(root)
    source = OCCLUDED_REID_SOURCE.format(root=root)
    folder = locate_folder(
        [
            root / OCCLUDED_REID_FOLDER,
            root / "ICME2018_Occluded-Person-Reidentification_datasets" / OCCLUDED_REID_FOLDER,
            root / "occluded_reid" / OCCLUDED_REID_FOLDER,
            root / "occluded_reid",
            root,
        ],
        list(OCCLUDED_REID_SPLITS.values()),
        title="Occluded-REID",
        layout=OCCLUDED_REID_LAYOUT.replace("<folder>", f"{root}/{OCCLUDED_REID_FOLDER}"),
        source=source,
    )
    dataset = load_test_only_set(
        folder,
        OCCLUDED_REID_SPLITS,
        name="occluded_reid",
        layout=OCCLUDED_REID_LAYOUT.replace("<folder>", str(folder)),
        nested=True,
        example="001_01.tif in occluded_body_images/001/",
        source_hint=f"Get it: {source}; {SYNTHETIC_HINT}.",
    )
    # the two folders share file names: keypoint files are told apart by the split folder
    dataset.extras[KEYPOINTS_BY_SPLIT_FOLDER] = True
    compare_with_official(dataset, OCCLUDED_REID_OFFICIAL, "Occluded-REID")
    return dataset
