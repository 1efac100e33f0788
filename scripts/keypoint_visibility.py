"""How much a keypoint-derived visibility can know: Spearman rho of each part's keypoint confidence with its
true visible share.

On the synthetic query images of the default preset, the hard preset and the occluded condition
(or the data overrides given): the ceiling of what `model.visibility_loss` (trained on keypoint
confidences) and `eval.visibility_matching=keypoints` can learn or use about occlusion.
The last column is the ceiling of a mu that only knows whether a part is hidden: a perfect
hidden-or-not detector, its ties among the wholly visible parts broken at random (a learned weight
never ties), scored the same way. With few hidden parts it stays far below 1. The concordance
column scores the keypoints' confidence with the tied pairs of the truth left out (1 = perfect, 0.5 = chance).
`python scripts/keypoint_visibility.py [overrides...]`, from the repository root
(e.g. `data.pose.visibility=detected`: the share of each part's joints detected, not their mean confidence).
"""

from __future__ import annotations

import sys

import torch
from omegaconf import open_dict

from reid.conf import compose_config
from reid.metrics.truth import concordance, spearman
from reid.names import PART_NAMES
from reid.tasks import build_datamodule

CONDITIONS = {
    "default preset": [],
    "hard preset": ["data.options.preset=hard"],
    "occluded condition": ["data=synthetic_occluded"],
}


def main(extra: list[str]) -> None:
    """Prints one Markdown row per condition (``extra``: overrides applied to every condition)."""
    print(
        "| query images | "
        + " | ".join(f"rho {p}" for p in PART_NAMES)
        + " | parts < 90 % visible | perfect hidden-or-not detector: mean rho | keypoints: mean concordance |"
    )
    print("|---|" + "---:|" * (len(PART_NAMES) + 3))
    for name, overrides in CONDITIONS.items():
        cfg = compose_config([*overrides, *extra])
        with open_dict(cfg):
            cfg.data.num_workers = 0
        datamodule = build_datamodule(cfg)
        visible, confidence = [], []
        for batch in datamodule.val_dataloader():
            query = batch["is_query"].bool()
            visible.append(batch["truth_visible"][query][:, 1:])
            confidence.append(batch["part_confidence"][query])
        shares, confidences = torch.cat(visible), torch.cat(confidence)
        rhos = [spearman(confidences[:, i], shares[:, i]) for i in range(len(PART_NAMES))]
        hidden = float((shares < 0.9).float().mean())
        ties = torch.rand(shares.shape, generator=torch.Generator().manual_seed(0))
        detector = -(shares < 0.999).float() + 0.01 * ties
        ceiling = sum(spearman(detector[:, i], shares[:, i]) for i in range(len(PART_NAMES))) / len(PART_NAMES)
        concordant = sum(concordance(confidences[:, i], shares[:, i]) for i in range(len(PART_NAMES))) / len(PART_NAMES)
        print(
            f"| {name} | "
            + " | ".join(f"{r:+.2f}" for r in rhos)
            + f" | {100 * hidden:.0f} % | {ceiling:+.2f} | {concordant:.2f} |"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
