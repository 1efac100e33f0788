"""The `custom` data set: your own images, listed in a CSV file or arranged in a folder layout.

CSV (``load("custom", root, csv="list.csv")``; a relative ``csv`` is looked for under
``root``, then under the working directory)::

    path,pid,camid,split
    images/a.jpg,7,0,train
    images/b.jpg,7,1,query
    /data/c.png,7,2,gallery

- ``path``: the image; a relative path is resolved against the CSV file's folder;
- ``pid``, ``camid``: non-negative integers (camids are used as given, so number them from 0);
- ``split``: ``train``, ``query`` or ``gallery``; further columns are ignored.

Folder layout (``load("custom", root)``; ``root`` or ``root/custom`` holds it)::

    train/<pid>/<camid>_<anything>.jpg
    query/<pid>/<camid>_<anything>.jpg
    gallery/<pid>/<camid>_<anything>.jpg

``<pid>`` and the ``<camid>`` file name prefix are non-negative integers; ``.jpg``, ``.jpeg``
and ``.png`` files are read, other files are ignored with a logged count.

Both forms: training pids are relabelled 0..q-1 in sorted order; query and gallery keep theirs.
There is no junk or distractor convention (pid 0 is an ordinary identity). Errors name the
row or file: a missing image, a non-integer or negative pid/camid, an unknown split, an empty
split, a query identity absent from the gallery, or a single camera id overall (the
evaluation only counts matches from another camera). Keypoints, if any, go in
``<folder>/keypoints`` (the CSV's folder, or the layout's).
"""

from __future__ import annotations

import csv as csv_module
import logging
import re
from collections import Counter
from pathlib import Path
from typing import NamedTuple

from reid.data.datasets.common import (
    IMAGE_SUFFIXES,
    DatasetFormatError,
    existing_keypoint_dir,
    is_broken_link,
    locate_folder,
    relabel,
)
from reid.data.datasets.registry import SYNTHETIC_HINT, DatasetNotFoundError, register
from reid.data.records import Record, ReIDDataset

log = logging.getLogger(__name__)

SPLITS = ("train", "query", "gallery")
CSV_COLUMNS = ("path", "pid", "camid", "split")
CAMERA_PREFIX = re.compile(r"^(\d+)_")
LAYOUT = "{folder}/{{train,query,gallery}}/<pid>/<camid>_<anything>.jpg, or a CSV file path,pid,camid,split (csv=...)"


class _Entry(NamedTuple):
    record: Record
    split: str
    where: str


def _non_negative_int(text: str, column: str, where: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise DatasetFormatError(f"{where}: {column} {text!r} is not an integer; fix the value") from None
    if value < 0:
        raise DatasetFormatError(f"{where}: {column} {value} is negative; use non-negative integers")
    return value


def _resolve_csv(root: Path, csv: str | Path) -> Path:
    csv = Path(csv).expanduser()
    candidates = [csv] if csv.is_absolute() else [root / csv, Path.cwd() / csv]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise DatasetNotFoundError(
        f"custom data set CSV not found, tried {', '.join(str(c) for c in candidates)}; "
        f"write a CSV with the header path,pid,camid,split or pass an existing file as csv=...; {SYNTHETIC_HINT}"
    )


def read_csv(path: Path) -> list[_Entry]:
    """Reads and checks a ``path,pid,camid,split`` CSV (rules in the module docstring)."""
    entries: list[_Entry] = []
    missing: list[str] = []
    # utf-8-sig: spreadsheets often start the file with a byte-order mark.
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv_module.DictReader(handle)
        header = [name.strip() for name in reader.fieldnames or []]
        absent = [column for column in CSV_COLUMNS if column not in header]
        if absent:
            raise DatasetFormatError(
                f"{path} line 1: header {header} lacks {absent}; the first line must be path,pid,camid,split"
            )
        reader.fieldnames = header
        for row in reader:
            where = f"{path} line {reader.line_num}"
            if any(row.get(column) is None for column in CSV_COLUMNS):
                raise DatasetFormatError(f"{where}: expected 4 comma-separated values path,pid,camid,split")
            split = row["split"].strip().lower()
            if split not in SPLITS:
                raise DatasetFormatError(f"{where}: split {row['split']!r} is not one of {', '.join(SPLITS)}")
            pid = _non_negative_int(row["pid"], "pid", where)
            camid = _non_negative_int(row["camid"], "camid", where)
            if not row["path"].strip():
                raise DatasetFormatError(f"{where}: empty path")
            image = Path(row["path"].strip()).expanduser()
            if not image.is_absolute():
                image = path.parent / image
            if not image.is_file() and not is_broken_link(image):
                missing.append(f"{where} ({image})")
            entries.append(_Entry(Record(str(image), pid, camid), split, where))
    if missing:
        raise DatasetFormatError(
            f"{len(missing)} image(s) listed in {path} do not exist, first: {missing[0]}; "
            "fix the paths (relative ones start at the CSV's folder) or remove the rows"
        )
    return entries


def read_folder_layout(folder: Path) -> list[_Entry]:
    """Reads ``folder/{train,query,gallery}/<pid>/<camid>_<anything>.jpg``."""
    entries: list[_Entry] = []
    ignored: Counter = Counter()
    for split in SPLITS:
        for pid_dir in sorted((folder / split).iterdir()):
            if not pid_dir.is_dir():
                ignored[f"files directly in {split}/ (expected <pid> folders)"] += 1
                continue
            pid = _non_negative_int(pid_dir.name, "identity folder name", str(pid_dir))
            for path in sorted(pid_dir.iterdir()):
                if not path.is_file() and not is_broken_link(path):
                    ignored["nested folders"] += 1
                    continue
                if path.suffix.lower() not in IMAGE_SUFFIXES:
                    ignored["non-image files"] += 1
                    continue
                match = CAMERA_PREFIX.match(path.name)
                if match is None:
                    raise DatasetFormatError(
                        f"{path}: file name must start with '<camid>_' (like 0_0001.jpg); rename the file"
                    )
                entries.append(_Entry(Record(str(path), pid, int(match[1])), split, str(path)))
    for what, count in sorted(ignored.items()):
        log.info("custom data set %s: ignored %d %s", folder, count, what)
    return entries


def _validate(entries: list[_Entry], source: Path) -> None:
    by_split = {split: [e for e in entries if e.split == split] for split in SPLITS}
    for split, split_entries in by_split.items():
        if not split_entries:
            raise DatasetFormatError(f"{source}: the {split} split is empty; every split needs images")
    cameras = {e.record.camid for e in entries}
    if len(cameras) < 2:
        raise DatasetFormatError(
            f"{source}: every image has camid {cameras.pop()}; cross-camera evaluation needs at least two "
            "camera ids (same-camera matches are not counted)"
        )
    gallery_pids = {e.record.pid for e in by_split["gallery"]}
    orphans = [e for e in by_split["query"] if e.record.pid not in gallery_pids]
    if orphans:
        raise DatasetFormatError(
            f"{len(orphans)} query image(s) have an identity absent from the gallery, first: {orphans[0].where} "
            f"(pid {orphans[0].record.pid}); add gallery images of it or drop the query"
        )
    gallery_cameras: dict[int, set[int]] = {}
    for e in by_split["gallery"]:
        gallery_cameras.setdefault(e.record.pid, set()).add(e.record.camid)
    unmatched = sum(1 for e in by_split["query"] if not gallery_cameras[e.record.pid] - {e.record.camid})
    if unmatched:
        log.warning(
            "%s: %d query image(s) have gallery matches only from their own camera; the evaluation skips them",
            source,
            unmatched,
        )


@register("custom")
def load_custom(root: Path, *, csv: str | Path | None = None) -> ReIDDataset:
    """Your own data set, from a CSV file (``csv=...``) or the folder layout (module docstring).

    Args:
        root: the data folder (the folder layout sits in ``root`` or ``root/custom``).
        csv: a ``path,pid,camid,split`` CSV file; relative to ``root``, else to the working directory.

    Raises:
        DatasetNotFoundError: neither the CSV nor the layout exists.
        DatasetFormatError: a bad row or file, naming it (see the module docstring).
    """
    root = Path(root)
    if csv is not None:
        source = _resolve_csv(root, csv)
        entries = read_csv(source)
        folder = source.parent
    else:
        folder = locate_folder(
            [root, root / "custom"],
            list(SPLITS),
            title="custom data set",
            layout=LAYOUT.format(folder=root),
            source="arrange your images in that layout or list them in a CSV file and pass csv=...",
        )
        source = folder
        entries = read_folder_layout(folder)
    _validate(entries, source)
    records = {split: [e.record for e in entries if e.split == split] for split in SPLITS}
    return ReIDDataset(
        name="custom",
        root=folder,
        train=relabel(records["train"]),
        query=records["query"],
        gallery=records["gallery"],
        protocol="market",
        keypoint_dir=existing_keypoint_dir(folder),
        extras={"source": str(source)},
    )
