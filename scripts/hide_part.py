"""Does hiding a part lower its weight? mu of each part before and after one part's region is painted over.

For every query image of the checkpoint's data set, each part's Eq. 1-2 box is filled with the
image's mean colour (an occluder the network has never seen), the five crops are cut again, and
inter-attention's mu is compared with the plain image's. Prints, per hidden part, the mean change
of every part's mu (a part weight that follows visibility falls on the diagonal only). The joints
under the paint are dropped from the image's keypoints, as a pose estimator would miss them: that
is all a model with ``model.net.inter_source=keypoints`` sees of the paint.

`python scripts/hide_part.py <checkpoint> [data overrides...]`, from the repository root.
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from omegaconf import open_dict

from reid.data.crops import crop_regions
from reid.data.index import keypoint_source
from reid.data.io import read_image
from reid.lit.module import ReIDModule
from reid.names import PART_NAMES
from reid.pose.regions import region_confidence
from reid.tasks import build_datamodule, condition_config


def main(argv: list[str]) -> None:
    """Prints the table of mean changes of mu."""
    checkpoint, overrides = argv[0], argv[1:]
    module = ReIDModule.load_from_checkpoint(checkpoint).eval()
    stored = torch.load(checkpoint, map_location="cpu", weights_only=True)
    cfg = condition_config(stored, overrides)
    with open_dict(cfg):
        cfg.data.options = stored["reid_config"]["data"]["options"]  # the synthetic set it was trained on
    datamodule = build_datamodule(cfg)
    eval_set = datamodule.eval_set
    assert datamodule.dataset is not None  # set up by build_datamodule
    source = keypoint_source(datamodule.dataset, datamodule.regions, datamodule.pose)
    rows = [i for i, query in enumerate(eval_set.is_query) if query]
    change = np.zeros((len(PART_NAMES), len(PART_NAMES)))

    def mu_of(picture: np.ndarray, box: np.ndarray, keypoints: np.ndarray | None) -> np.ndarray:
        whole, parts = crop_regions(picture, box, eval_set.whole_size, eval_set.part_size)
        whole_t, parts_t = eval_set.transform(whole, parts, box)
        confidence = torch.from_numpy(region_confidence(keypoints))[None]
        return module(whole_t[None], parts_t[None], part_visibility=confidence).part_weights[0].numpy()

    with torch.no_grad():
        for i in rows:
            path = eval_set.records[i].image_path
            image = read_image(path)
            keypoints = None if source is None else source.get(path, image_size=(image.shape[1], image.shape[0]))
            box = eval_set.boxes[i]
            plain = mu_of(image, box, keypoints)
            for part in range(len(PART_NAMES)):
                hidden = image.copy()
                x1, y1, x2, y2 = (int(round(v)) for v in box[part + 1])
                y1, y2 = max(y1, 0), min(y2, image.shape[0])
                x1, x2 = max(x1, 0), min(x2, image.shape[1])
                hidden[y1:y2, x1:x2] = image.reshape(-1, 3).mean(axis=0).astype(np.uint8)
                missed = None if keypoints is None else np.array(keypoints, dtype=np.float64)
                if missed is not None:
                    x, y = missed[:, 0], missed[:, 1]
                    missed[(x >= x1) & (x < x2) & (y >= y1) & (y < y2), 2] = 0.0
                change[part] += mu_of(hidden, box, missed) - plain
    change /= len(rows)
    print(f"{checkpoint}: mean change of mu over {len(rows)} queries when one part's box is painted over")
    print("| hidden part | " + " | ".join(f"d mu {p}" for p in PART_NAMES) + " |")
    print("|---|" + "---:|" * len(PART_NAMES))
    for name, values in zip(PART_NAMES, change, strict=True):
        print(f"| {name} | " + " | ".join(f"{v:+.4f}" for v in values) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
