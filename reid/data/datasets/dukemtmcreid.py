"""DukeMTMC-reID: the Market-1501 folder layout with names like ``0001_c2_f0046182.jpg`` and cameras 1-8."""

from __future__ import annotations

from pathlib import Path

from reid.data.datasets.common import compare_with_official, locate_folder
from reid.data.datasets.market1501 import MARKET_LAYOUT, SPLIT_FOLDERS, parse_market_style
from reid.data.datasets.registry import SYNTHETIC_HINT, register
from reid.data.records import ReIDDataset

DUKE_FOLDER = "DukeMTMC-reID"
DUKE_LAYOUT = MARKET_LAYOUT.replace("<pid>_c<camera>s<seq>_<frame>_<box>.jpg", "<pid>_c<camera>_f<frame>.jpg")
DUKE_SOURCE = (
    "DukeMTMC-reID.zip is linked from https://github.com/layumi/DukeMTMC-reID_evaluation "
    "(check its licence terms); unzip it into {root}"
)
# torchreid's printed summary of the release: (images, ids) per split.
DUKE_OFFICIAL = {"train": (16522, 702), "query": (2228, 702), "gallery": (17661, 1110)}


@register("dukemtmcreid")
def load_dukemtmcreid(root: Path) -> ReIDDataset:
    """DukeMTMC-reID from ``root/DukeMTMC-reID``, ``root/{dukemtmcreid,dukemtmc-reid}/DukeMTMC-reID``,
    ``root/{dukemtmcreid,dukemtmc-reid}`` or ``root`` itself (the first holding the three split folders).

    Parsed with the Market-1501 rules (:mod:`reid.data.datasets.market1501`); the release has
    no junk (-1) or distractor (0) ids, its 408 distractor identities carry ordinary ids.
    """
    root = Path(root)
    source = DUKE_SOURCE.format(root=root)
    folder = locate_folder(
        [
            root / DUKE_FOLDER,
            root / "dukemtmcreid" / DUKE_FOLDER,
            root / "dukemtmc-reid" / DUKE_FOLDER,
            root / "dukemtmcreid",
            root / "dukemtmc-reid",
            root,
        ],
        list(SPLIT_FOLDERS.values()),
        title="DukeMTMC-reID",
        layout=DUKE_LAYOUT.replace("<folder>", f"{root}/{DUKE_FOLDER}"),
        source=source,
    )
    dataset = parse_market_style(
        folder, name="dukemtmcreid", num_cameras=8, source_hint=f"Get it: {source}; {SYNTHETIC_HINT}."
    )
    compare_with_official(dataset, DUKE_OFFICIAL, "DukeMTMC-reID")
    return dataset
