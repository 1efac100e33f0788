"""MSMT17 (V1 and V2) from its list files, as torchreid reads it; cameras from the file names.

Layout (V1; V2 names its image folders ``mask_train_v2/`` and ``mask_test_v2/``)::

    MSMT17_V1/
        train/<pid>/<pid>_<index>_<camera>_<date><time>_<frame>_<n>.jpg
        test/<pid>/...
        list_train.txt  list_val.txt      # "<path relative to train/> <pid>" per line
        list_query.txt  list_gallery.txt  # "<path relative to test/> <pid>" per line

The training split is ``list_train.txt`` + ``list_val.txt`` (as torchreid uses it), relabelled
0..q-1; the camera is the third ``_``-separated field of the file name (``01``..``15``, stored
0-based). Evaluation follows the Market protocol (same-identity same-camera gallery images are
left out of each query's ranking).
"""

from __future__ import annotations

import logging
from pathlib import Path

from reid.data.datasets.common import (
    DatasetFormatError,
    compare_with_official,
    existing_keypoint_dir,
    is_broken_link,
    relabel,
)
from reid.data.datasets.registry import SYNTHETIC_HINT, not_found, register
from reid.data.records import Record, ReIDDataset

log = logging.getLogger(__name__)

NUM_CAMERAS = 15
# (version, train folder, test folder) in the order they are looked for
VERSIONS = (("MSMT17_V2", "mask_train_v2", "mask_test_v2"), ("MSMT17_V1", "train", "test"))
LISTS = {"train": "list_train.txt", "val": "list_val.txt", "query": "list_query.txt", "gallery": "list_gallery.txt"}
MSMT_SOURCE = (
    "MSMT17 is distributed by its authors on request (https://www.pkuvmc.com/dataset.html); "
    "unzip MSMT17_V1.tar.gz or MSMT17_V2.tar.gz into {root}"
)
MSMT_LAYOUT = (
    "<folder>/{train,test}/<pid>/<pid>_<index>_<camera>_..._<n>.jpg and <folder>/list_{train,val,query,gallery}.txt "
    "('<relative path> <pid>' per line; V2: mask_train_v2/, mask_test_v2/)"
)
# the release as its paper and torchreid describe it: (images, ids) per split
MSMT_OFFICIAL = {"train": (32621, 1041), "query": (11659, 3060), "gallery": (82161, 3060)}


def _read_list(list_path: Path, image_dir: Path) -> list[Record]:
    """Records of one list file; a malformed line or a file name without a camera stops, naming both."""
    records = []
    for number, line in enumerate(list_path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise DatasetFormatError(
                f"{list_path}:{number}: expected '<relative image path> <pid>', got {line.strip()!r}; "
                "fix or remove the line"
            )
        relative, pid = parts[0], int(parts[1])
        fields = Path(relative).name.split("_")
        if len(fields) < 3 or not fields[2].isdigit() or not 1 <= int(fields[2]) <= NUM_CAMERAS:
            raise DatasetFormatError(
                f"{list_path}:{number}: the file name {Path(relative).name} has no camera 01..{NUM_CAMERAS} as its "
                "third '_' field (like 0000_000_01_0303morning_0015_0.jpg); rename it or remove the line"
            )
        path = image_dir / relative
        if not path.is_file() and not is_broken_link(path):
            raise DatasetFormatError(f"{list_path}:{number}: {path} does not exist; the copy is incomplete")
        records.append(Record(str(path), pid, int(fields[2]) - 1))
    return records


@register("msmt17")
def load_msmt17(root: Path) -> ReIDDataset:
    """MSMT17 V2 or V1 from ``root/MSMT17_V{2,1}``, ``root/msmt17/MSMT17_V{2,1}`` (V2 first when both are there)."""
    root = Path(root)
    source = MSMT_SOURCE.format(root=root)
    tried: list[tuple[Path, str]] = []
    for version, train_dir, test_dir in VERSIONS:
        for folder in (root / version, root / "msmt17" / version):
            if not folder.is_dir():
                tried.append((folder, "does not exist"))
                continue
            required = [train_dir, test_dir, *LISTS.values()]
            missing = [name for name in required if not (folder / name).exists()]
            if missing:
                tried.append((folder, "lacks " + ", ".join(missing)))
                continue
            splits = {
                split: _read_list(folder / name, folder / (train_dir if split in ("train", "val") else test_dir))
                for split, name in LISTS.items()
            }
            for split, records in splits.items():
                log.info(
                    "msmt17 (%s) %s: %d images, %d ids", version, split, len(records), len({r.pid for r in records})
                )
            if not splits["train"] or not splits["query"] or not splits["gallery"]:
                empty = [s for s in ("train", "query", "gallery") if not splits[s]]
                raise not_found(
                    "MSMT17",
                    [(folder, "empty list(s): " + ", ".join(empty))],
                    MSMT_LAYOUT.replace("<folder>", str(folder)),
                    f"{source}; {SYNTHETIC_HINT}",
                )
            dataset = ReIDDataset(
                name="msmt17",
                root=folder,
                train=relabel(splits["train"] + splits["val"]),
                query=splits["query"],
                gallery=splits["gallery"],
                protocol="market",
                keypoint_dir=existing_keypoint_dir(folder),
            )
            compare_with_official(dataset, MSMT_OFFICIAL, version)
            return dataset
    raise not_found(
        "MSMT17", tried, MSMT_LAYOUT.replace("<folder>", f"{root}/MSMT17_V1"), f"{source}; {SYNTHETIC_HINT}"
    )
