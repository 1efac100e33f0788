"""Partial-REID (Zheng et al., ICCV 2015): partial-body queries against whole-body gallery images; a test set only.

Layout, as the release ``Partial-REID_Dataset.rar`` unpacks and as the public loaders read it
(BPBReID's and fast-reid's ``partial_reid.py``: ``partial_body_images/*.jpg``, the identity from
the file name; DSR's probe list names ``partial_body_images/001_001.jpg``)::

    Partial_REID/                                # or Partial-REID_Dataset/
        partial_body_images/<pid>_<n>.jpg        # the queries: 001_001.jpg ... 001_005.jpg
        whole_body_images/<pid>_<n>.jpg          # the gallery, named the same way
        occluded_body_images/                    # in some copies; not part of the protocol, not read

60 identities with 5 partial and 5 whole-body images each (300 + 300); no training split (the
protocol trains on Market-1501). The rules are Occluded-REID's
(:mod:`reid.data.datasets.occluded_reid`) with the images directly in the split folders: the
identity is the file name's number before the first ``_``, every query is camera 0 and every
gallery image camera 1 (all 5 whole-body images of the identity are true matches), sub-folders and
other files are ignored with a logged count. Keypoints, if any: ``<folder>/keypoints/
{partial_body_images,whole_body_images}/<stem>_keypoints.json``, the usual layout.
"""

from __future__ import annotations

from pathlib import Path

from reid.data.datasets.common import compare_with_official, locate_folder
from reid.data.datasets.occluded_reid import load_test_only_set
from reid.data.datasets.registry import SYNTHETIC_HINT, register
from reid.data.records import ReIDDataset

PARTIAL_REID_FOLDER = "Partial_REID"
PARTIAL_REID_SPLITS = {"query": "partial_body_images", "gallery": "whole_body_images"}
PARTIAL_REID_LAYOUT = "<folder>/{partial_body_images,whole_body_images}/<pid>_<n>.jpg"
PARTIAL_REID_SOURCE = (
    "Partial-REID is released by its authors as http://isee.sysu.edu.cn/files/resource/Partial-REID_Dataset.rar "
    "(linked from https://github.com/tinajia2012/ICME2018_Occluded-Person-Reidentification_datasets); "
    "unpack it and move the folder into {root} as Partial_REID/ (Partial-REID_Dataset/ is found too)"
)
# (images, ids) per split: the paper's (60 persons, 5 partial + 5 full-body images each)
PARTIAL_REID_OFFICIAL: dict[str, tuple[int | None, int | None]] = {"query": (300, 60), "gallery": (300, 60)}


@register("partial_reid", test_only=True)
def load_partial_reid(root: Path) -> ReIDDataset:
    """Partial-REID from ``root/Partial_REID``, ``root/Partial-REID_Dataset``, ``root/PartialREID``,
    ``root/partial_reid`` or ``root`` itself (the first holding both image folders).

    Rules are in the module docstring; ``train`` is empty (a test set only).
    """
    root = Path(root)
    source = PARTIAL_REID_SOURCE.format(root=root)
    folder = locate_folder(
        [
            root / PARTIAL_REID_FOLDER,
            root / "Partial-REID_Dataset",
            root / "PartialREID",
            root / "partial_reid" / PARTIAL_REID_FOLDER,
            root / "partial_reid",
            root,
        ],
        list(PARTIAL_REID_SPLITS.values()),
        title="Partial-REID",
        layout=PARTIAL_REID_LAYOUT.replace("<folder>", f"{root}/{PARTIAL_REID_FOLDER}"),
        source=source,
    )
    dataset = load_test_only_set(
        folder,
        PARTIAL_REID_SPLITS,
        name="partial_reid",
        layout=PARTIAL_REID_LAYOUT.replace("<folder>", str(folder)),
        nested=False,
        example="001_001.jpg",
        source_hint=f"Get it: {source}; {SYNTHETIC_HINT}.",
    )
    compare_with_official(dataset, PARTIAL_REID_OFFICIAL, "Partial-REID")
    return dataset
