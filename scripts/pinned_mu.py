"""What per-image part weights cost a keypoint-weighted model: R1 / mAP with its mu, and with mu pinned at 0.5.

For checkpoints trained with ``model.net.inter_source=keypoints``: each is scored on the harder
preset and its occluded condition twice, once with the parts weighed by the images' keypoint
visibility (as trained) and once with every part's mu set to 0.5 (with ``inter_weight=gate`` a
weight of 1: the plain concatenation of the same unit-norm part features). Prints one line per
checkpoint and condition.
`python scripts/pinned_mu.py <checkpoint> [<checkpoint> ...]`, from the repository root.
"""

from __future__ import annotations

import sys

import torch

from reid.lit.module import ReIDModule
from reid.metrics import evaluate_features
from reid.tasks import build_datamodule, condition_config

CONDITIONS = {
    "hard preset": ["data.options.preset=hard"],
    "occluded condition": ["data=synthetic_occluded", "data.options.preset=hard"],
}


def score(checkpoint: str) -> None:
    """Prints ``<checkpoint> | <condition> | R1 / mAP with mu | R1 / mAP pinned`` for both conditions."""
    module = ReIDModule.load_from_checkpoint(checkpoint).eval()
    stored = torch.load(checkpoint, map_location="cpu", weights_only=True)
    for name, overrides in CONDITIONS.items():
        cfg = condition_config(stored, overrides)  # data.pose.visibility as trained, among the rest
        features: dict[str, list[torch.Tensor]] = {"mu": [], "pinned": []}
        pids, camids, is_query = [], [], []
        with torch.no_grad():
            for batch in build_datamodule(cfg).val_dataloader():
                mu = torch.nan_to_num(batch["part_confidence"].float(), nan=1.0)
                for key, weights in (("mu", mu), ("pinned", torch.full_like(mu, 0.5))):
                    features[key].append(module(batch["whole"], batch["parts"], part_visibility=weights).feature)
                pids.append(batch["pid"])
                camids.append(batch["camid"])
                is_query.append(batch["is_query"].bool())
        pid, camid, query = torch.cat(pids), torch.cat(camids), torch.cat(is_query)
        cells = []
        for chunks in features.values():
            feature = torch.cat(chunks)
            scores = evaluate_features(
                feature[query], feature[~query], pid[query], pid[~query], camid[query], camid[~query]
            )
            cells.append(f"{100 * scores['rank1']:.1f} / {100 * scores['mAP']:.1f}")
        print(f"| {checkpoint} | {name} | " + " | ".join(cells) + " |", flush=True)


def main(checkpoints: list[str]) -> None:
    """One Markdown row per checkpoint and condition."""
    print("| checkpoint | query images | R1 / mAP, keypoint mu | R1 / mAP, mu pinned at 0.5 |")
    print("|---|---|---:|---:|")
    for checkpoint in checkpoints:
        score(checkpoint)


if __name__ == "__main__":
    main(sys.argv[1:])
