"""Market-1501 and the parser of its folder layout, which DukeMTMC-reID and the synthetic set share.

Layout: ``<folder>/{bounding_box_train,bounding_box_test,query}/`` with images named
``<pid>_c<camera>...`` (``0002_c1s1_000451_03.jpg``). Rules, as in the reference code:

- the pattern ``^(-?\\d+)_c(\\d+)`` is matched against the file name only (the reference
  parsers search the whole path, so a parent folder named like ``12_c3`` would match);
- pid ``-1`` is junk and dropped everywhere; pid ``0`` is a distractor kept in the gallery
  only (dropped, with a count, from train and query);
- camera numbers start at 1 in the names and become 0-based camids;
- training pids are relabelled 0..q-1 in sorted order; query and gallery keep the original pids;
- files that are not images (``Thumbs.db``) and sub-folders are ignored with a logged count;
  an image whose name does not parse is an error naming it.
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
    relabel,
)
from reid.data.datasets.registry import SYNTHETIC_HINT, DatasetNotFoundError, register
from reid.data.records import Record, ReIDDataset

log = logging.getLogger(__name__)

MARKET_NAME = re.compile(r"^(-?\d+)_c(\d+)")
SPLIT_FOLDERS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
MARKET_LAYOUT = "<folder>/{bounding_box_train,bounding_box_test,query}/<pid>_c<camera>s<seq>_<frame>_<box>.jpg"

MARKET_FOLDER = "Market-1501-v15.09.15"
MARKET_SOURCE = (
    "download Market-1501-v15.09.15.zip from the authors' page "
    "https://zheng-lab.cecs.anu.edu.au/Project/project_reid.html and unzip it into {root}"
)
# torchreid's printed summary of the release: (images, ids) per split.
MARKET_OFFICIAL = {"train": (12936, 751), "query": (3368, 750), "gallery": (15913, 751)}


def _parse_split(directory: Path, split: str, num_cameras: int | None) -> tuple[list[Record], Counter]:
    counts: Counter = Counter()
    records: list[Record] = []
    for path in sorted(directory.iterdir()):
        if not path.is_file() and not is_broken_link(path):
            counts["sub-folders"] += 1
            continue
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            counts["non-image files"] += 1
            continue
        match = MARKET_NAME.match(path.name)
        if match is None:
            raise DatasetFormatError(
                f"{path}: file name does not start with '<pid>_c<camera>' (like 0002_c1s1_000451_03.jpg); "
                "rename or remove the file"
            )
        pid, camera = int(match[1]), int(match[2])
        if pid < -1:
            raise DatasetFormatError(f"{path}: pid {pid} is below -1 (the junk id); rename or remove the file")
        if camera < 1 or (num_cameras is not None and camera > num_cameras):
            allowed = f"1-{num_cameras}" if num_cameras is not None else ">= 1"
            raise DatasetFormatError(f"{path}: camera c{camera} outside {allowed}; rename or remove the file")
        if pid == -1:
            counts["junk images (pid -1)"] += 1
            continue
        if pid == 0:
            if split != "gallery":
                counts["distractor images (pid 0) outside the gallery"] += 1
                continue
            counts["distractor images (pid 0) kept"] += 1
        records.append(Record(str(path), pid, camera - 1))
    return records, counts


def parse_market_style(
    folder: Path,
    *,
    name: str,
    num_cameras: int | None = None,
    source_hint: str = "Re-create or re-download it.",
) -> ReIDDataset:
    """Parses a Market-1501-style folder into a :class:`ReIDDataset` (rules in the module docstring).

    Args:
        folder: the folder holding ``bounding_box_train``, ``bounding_box_test`` and ``query``.
        name: the data set name to record.
        num_cameras: highest camera number allowed in file names; None accepts any >= 1.
        source_hint: a sentence saying how to get the files, for the error on a missing/empty split.

    Raises:
        DatasetNotFoundError: a split folder is missing or holds no usable image.
        DatasetFormatError: an image file name does not parse.
    """
    folder = Path(folder)
    splits: dict[str, list[Record]] = {}
    for split, sub in SPLIT_FOLDERS.items():
        directory = folder / sub
        if not directory.is_dir():
            raise DatasetNotFoundError(f"{directory} is missing: expected {MARKET_LAYOUT}. {source_hint}")
        records, counts = _parse_split(directory, split, num_cameras)
        for what, count in sorted(counts.items()):
            log.info("%s %s: %d %s", name, sub, count, what)
        if not records:
            raise DatasetNotFoundError(
                f"{directory} holds no usable image (expected {MARKET_LAYOUT}); the copy is incomplete. {source_hint}"
            )
        splits[split] = records
    return ReIDDataset(
        name=name,
        root=folder,
        train=relabel(splits["train"]),
        query=splits["query"],
        gallery=splits["gallery"],
        protocol="market",
        keypoint_dir=existing_keypoint_dir(folder),
    )


@register("market1501")
def load_market1501(root: Path) -> ReIDDataset:
    """Market-1501 from ``root/Market-1501-v15.09.15``, ``root/market1501/Market-1501-v15.09.15``,
    ``root/market1501`` or ``root`` itself (the first holding the three split folders)."""
    root = Path(root)
    source = MARKET_SOURCE.format(root=root)
    folder = locate_folder(
        [root / MARKET_FOLDER, root / "market1501" / MARKET_FOLDER, root / "market1501", root],
        list(SPLIT_FOLDERS.values()),
        title="Market-1501",
        layout=MARKET_LAYOUT.replace("<folder>", f"{root}/{MARKET_FOLDER}"),
        source=source,
    )
    dataset = parse_market_style(
        folder, name="market1501", num_cameras=6, source_hint=f"Get it: {source}; {SYNTHETIC_HINT}."
    )
    compare_with_official(dataset, MARKET_OFFICIAL, "Market-1501")
    return dataset
