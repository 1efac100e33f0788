"""Occluded-Duke (Miao et al., ICCV 2019): DukeMTMC-reID re-split so that every query is occluded, in Duke's layout.

The authors publish name lists and ``convert_duke_to_occduke.py``
(https://github.com/lightas/Occluded-DukeMTMC-Dataset), which writes ``Occluded_Duke/`` with
``bounding_box_train/``, ``query/`` and ``bounding_box_test/`` from ``DukeMTMC-reID.zip``: file
names ``<pid>_c<camera>_f<frame>.jpg``, cameras 1-8, no junk ids. It is parsed with the
Market-1501 rules (:mod:`reid.data.datasets.market1501`) and scored with Duke's protocol (CMC +
mAP, same-identity same-camera gallery images left out). Release: 15,618 training images of 702
ids, 2,210 queries (all occluded), 17,661 gallery images (10 % occluded).
"""

from __future__ import annotations

from pathlib import Path

from reid.data.datasets.common import compare_with_official, locate_folder
from reid.data.datasets.dukemtmcreid import DUKE_LAYOUT
from reid.data.datasets.market1501 import SPLIT_FOLDERS, parse_market_style
from reid.data.datasets.registry import SYNTHETIC_HINT, register
from reid.data.records import ReIDDataset

OCCLUDED_DUKE_FOLDER = "Occluded_Duke"
OCCLUDED_DUKE_SOURCE = (
    "run convert_duke_to_occduke.py of https://github.com/lightas/Occluded-DukeMTMC-Dataset on DukeMTMC-reID.zip "
    "(it writes Occluded_Duke/) and move Occluded_Duke/ into {root}"
)
# (images, ids) per split as the PGFA paper describes the release; the query and gallery id counts (519 and
# 1,110 in later surveys' tables) are not checked
OCCLUDED_DUKE_OFFICIAL: dict[str, tuple[int | None, int | None]] = {
    "train": (15618, 702),
    "query": (2210, None),
    "gallery": (17661, None),
}


@register("occluded_duke")
def load_occluded_duke(root: Path) -> ReIDDataset:
    """Occluded-Duke from ``root/Occluded_Duke``, ``root/occluded_duke/Occluded_Duke``, ``root/occluded_duke``
    or ``root`` itself (the first holding the three split folders); rules in the module docstring."""
    root = Path(root)
    source = OCCLUDED_DUKE_SOURCE.format(root=root)
    folder = locate_folder(
        [
            root / OCCLUDED_DUKE_FOLDER,
            root / "occluded_duke" / OCCLUDED_DUKE_FOLDER,
            root / "occluded_duke",
            root,
        ],
        list(SPLIT_FOLDERS.values()),
        title="Occluded-Duke",
        layout=DUKE_LAYOUT.replace("<folder>", f"{root}/{OCCLUDED_DUKE_FOLDER}"),
        source=source,
    )
    dataset = parse_market_style(
        folder, name="occluded_duke", num_cameras=8, source_hint=f"Get it: {source}; {SYNTHETIC_HINT}."
    )
    compare_with_official(dataset, OCCLUDED_DUKE_OFFICIAL, "Occluded-Duke")
    return dataset
