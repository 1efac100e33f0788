"""Do a checkpoint's part features know which parts are hidden? Probes of frozen features, and a control.

Why learned part weights never followed the synthetic truth could be the label (the keypoints'
confidence knows little of it) or the features (identity training may discard what an occluder
looks like). This separates the two. Each probe is fitted on the training images of the hard
preset (no augmentation; the probe, never the network, sees the training images' truth) to one
label:

- ``truth``: the part's true visible share (synthetic-only): what the features know at best;
- ``keypoints``: the part's keypoint visibility (``data.pose.visibility``: mean confidence, or
  the share detected with ``--visibility detected``): what the pseudo-label can teach;

from one of these inputs:

- each block of the checkpoint's (grouped) part branch, pooled (mean and max over positions), by
  ridge regression; and the crop's own pixels in 8 x 4 cells, the same way;
- the last block's map in the visibility map's own form (``inter_source=map``: a 1x1 convolution
  per location, the mean of the sigmoids), and with a hidden layer of 64;
- the crops themselves, through a small network trained from scratch for it (the control: what a
  network of its own can learn from the crops with that label; independent of the checkpoint).

Each is scored on the training images (the fit) and on the query images of the hard preset and of
the occluded condition by its concordance with the true visible share (pairs tied in the truth
left out; 0.5 = blind, 1 = perfect), mean over the four parts. The keypoint visibility's own
concordance is the reference.

`python scripts/visibility_probe.py <checkpoint> [--visibility confidence|detected]
[--ridge 1000] [--crop-seeds 3]`, from the repository root (about 25 minutes on two cores).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from reid.data.crop_dataset import CropDataset
from reid.data.truth import truth_path
from reid.lit.module import ReIDModule
from reid.metrics.truth import concordance
from reid.names import PART_NAMES
from reid.tasks import build_datamodule, condition_config

CONDITIONS = {"hard preset": ["data.options.preset=hard"], "occluded condition": ["data=synthetic_occluded"]}
TRAIN_CONDITION = ["data.options.preset=hard"]


@dataclass
class Probed:
    """What the probes read from a set of images: per feature set (the part branch's blocks pooled,
    the crop's cells) (N, 4, d), the last block's maps (N, 4, C, h, w), the true visible share and
    the keypoint visibility (N, 4)."""

    blocks: list[Tensor]
    map: Tensor
    crops: Tensor
    truth: Tensor
    keypoints: Tensor

    def label(self, name: str) -> Tensor:
        """The ``truth`` or ``keypoints`` label (N, 4)."""
        return self.truth if name == "truth" else self.keypoints


def block_features(
    module: ReIDModule, loader: torch.utils.data.DataLoader, select_queries: bool
) -> Iterator[tuple[list[Tensor], Tensor, Tensor, Tensor, Tensor]]:
    """Per batch: each part-branch block's pooled features (B, 4, 2C) and the crop's cells, the last
    block's map, the true visible shares (B, 4) and the keypoint visibility (B, 4)."""
    branch: Any = module.net.part_branch
    captured: list[Tensor] = []
    hooks = [block.register_forward_hook(lambda _m, _i, out: captured.append(out[0])) for block in branch.blocks]
    try:
        for batch in loader:
            keep = batch["is_query"].bool() if select_queries else torch.ones(len(batch["pid"]), dtype=torch.bool)
            if not keep.any():
                continue
            captured.clear()
            module(batch["whole"][keep], batch["parts"][keep], part_visibility=batch["part_confidence"][keep])
            pooled = []
            last = captured[-1].float()
            spatial = last.reshape(last.shape[0], len(PART_NAMES), -1, *last.shape[-2:])
            for x in captured:
                grouped = x.float().reshape(x.shape[0], len(PART_NAMES), -1, *x.shape[-2:])
                pooled.append(torch.cat([grouped.mean(dim=(3, 4)), grouped.amax(dim=(3, 4))], dim=2))
            parts = batch["parts"][keep].float()  # (B, 4, 3, h, w): the crops themselves, 8 x 4 cells
            cells = torch.nn.functional.adaptive_avg_pool2d(parts.flatten(0, 1), (8, 4))
            pooled.append(cells.reshape(parts.shape[0], len(PART_NAMES), -1))
            yield pooled, spatial, parts, batch["truth_visible"][keep][:, 1:], batch["part_confidence"][keep]
    finally:
        for hook in hooks:
            hook.remove()


def collect(module: ReIDModule, loader: torch.utils.data.DataLoader, queries: bool) -> Probed:
    """Every batch's features, truth and keypoint visibility, concatenated."""
    features: list[list[Tensor]] = []
    maps: list[Tensor] = []
    crops: list[Tensor] = []
    truth: list[Tensor] = []
    keypoints: list[Tensor] = []
    with torch.no_grad():
        for pooled, spatial, parts, visible, confidence in block_features(module, loader, queries):
            features.append(pooled)
            maps.append(spatial)
            crops.append(parts)
            truth.append(visible)
            keypoints.append(confidence)
    blocks = [torch.cat([batch[b] for batch in features]) for b in range(len(features[0]))]
    return Probed(blocks, torch.cat(maps), torch.cat(crops), torch.cat(truth), torch.cat(keypoints))


def fit_map_probe(maps: Tensor, target: Tensor, hidden: int, epochs: int = 300, seed: int = 0) -> torch.nn.Module:
    """The visibility map's own form on one part's frozen last block (N, C, h, w): a 1x1 convolution
    (two with ``hidden`` > 0) scores each location, the image's score is the mean of their sigmoids,
    trained by binary cross-entropy against ``target`` (N,) with Adam, full batch."""
    torch.manual_seed(seed)
    channels = maps.shape[1]
    layers: list[torch.nn.Module] = (
        [torch.nn.Conv2d(channels, hidden, 1), torch.nn.ReLU(), torch.nn.Conv2d(hidden, 1, 1)]
        if hidden
        else [torch.nn.Conv2d(channels, 1, 1)]
    )
    probe = torch.nn.Sequential(torch.nn.BatchNorm2d(channels, affine=False), *layers)
    optimiser = torch.optim.Adam(probe.parameters(), lr=1e-2, weight_decay=1e-4)
    for _ in range(epochs):
        optimiser.zero_grad()
        share = torch.sigmoid(probe(maps)).mean(dim=(1, 2, 3)).clamp(1e-6, 1 - 1e-6)
        torch.nn.functional.binary_cross_entropy(share, target).backward()
        optimiser.step()
    return probe.eval()


def fit_crop_network(crops: Tensor, target: Tensor, epochs: int = 30, seed: int = 0) -> torch.nn.Module:
    """A small network of its own, trained from scratch on the part crops (N, 4, 3, h, w) to say each
    crop's visible share (N, 4): three 3x3 convolutions, then the visibility map's form (a 1x1
    score per location, the mean of their sigmoids), shared by the four parts, binary cross-entropy,
    Adam, batches of 128, horizontal flips. What a dedicated visibility network learns from the label."""
    torch.manual_seed(seed)

    def unit(cin: int, cout: int, stride: int) -> list[torch.nn.Module]:
        return [torch.nn.Conv2d(cin, cout, 3, stride, 1, bias=False), torch.nn.BatchNorm2d(cout), torch.nn.ReLU()]

    network = torch.nn.Sequential(*unit(3, 32, 1), *unit(32, 64, 2), *unit(64, 64, 2), torch.nn.Conv2d(64, 1, 1))
    x, y = crops.flatten(0, 1), target.flatten()
    known = ~torch.isnan(y)
    x, y = x[known], y[known].float()
    optimiser = torch.optim.Adam(network.parameters(), lr=1e-3, weight_decay=1e-4)
    for _ in range(epochs):
        for index in torch.randperm(len(x)).split(128):
            batch = x[index]
            batch = torch.where(torch.rand(len(batch), 1, 1, 1) < 0.5, batch.flip(-1), batch)
            optimiser.zero_grad()
            share = torch.sigmoid(network(batch)).mean(dim=(1, 2, 3)).clamp(1e-6, 1 - 1e-6)
            torch.nn.functional.binary_cross_entropy(share, y[index]).backward()
            optimiser.step()
    return network.eval()


def crop_scores(network: torch.nn.Module, crops: Tensor) -> Tensor:
    """A fitted crop network's visible share of each part (N, 4)."""
    with torch.no_grad():
        flat = crops.flatten(0, 1)
        return torch.cat([map_scores(network, chunk) for chunk in flat.split(512)]).view(crops.shape[:2])


def map_scores(probe: torch.nn.Module, maps: Tensor) -> Tensor:
    """A fitted map probe's visible share for each image."""
    with torch.no_grad():
        return torch.sigmoid(probe(maps)).mean(dim=(1, 2, 3))


def ridge(x: Tensor, y: Tensor, strength: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Ridge regression of ``y`` on standardised ``x``: (weights, bias, mean, std) in float64."""
    x, y = x.double(), y.double()
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    z = (x - mean) / std
    gram = z.T @ z + strength * torch.eye(z.shape[1], dtype=z.dtype)
    weights = torch.linalg.solve(gram, z.T @ (y - y.mean()))
    return weights, y.mean(), mean, std


def predict(model: tuple[Tensor, Tensor, Tensor, Tensor], x: Tensor) -> Tensor:
    """The ridge model's scores for ``x``."""
    weights, bias, mean, std = model
    return ((x.double() - mean) / std) @ weights + bias


def loaders(cfg_overrides: list[str], stored: dict[str, Any], visibility: str) -> tuple:
    """The hard preset's training images (evaluation transform, with truth) and a condition's eval loader."""
    overrides = [*cfg_overrides, f"data.pose.visibility={visibility}"]
    cfg = condition_config(stored, overrides, keep=["pose.visibility"])
    datamodule = build_datamodule(cfg)
    train = datamodule.train_set
    probe_set = CropDataset(
        train.records,
        train.boxes,
        datamodule.eval_set.transform,  # the evaluation transform: no augmentation
        train.whole_size,
        train.part_size,
        part_confidence=train.part_confidence,
        truth=[None if (p := truth_path(r.image_path)) is None else str(p) for r in train.records],
    )
    train_loader = torch.utils.data.DataLoader(probe_set, batch_size=64, shuffle=False)
    return train_loader, datamodule.val_dataloader()


def main() -> None:
    """Prints one Markdown table for the checkpoint."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--visibility", choices=("confidence", "detected"), default="confidence")
    parser.add_argument("--ridge", type=float, default=1000.0, help="ridge strength on standardised features")
    parser.add_argument("--crop-seeds", type=int, default=3, help="training seeds of the crop network (mean ± std)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    module = ReIDModule.load_from_checkpoint(args.checkpoint).eval()
    if not getattr(module.net, "group_parts", False):
        raise SystemExit("error: the probe reads the grouped part branch (model.net.group_parts=true)")
    stored = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
    train_loader, _ = loaders(TRAIN_CONDITION, stored, args.visibility)
    train = collect(module, train_loader, queries=False)
    tests = {
        name: collect(module, loaders(o, stored, args.visibility)[1], queries=True) for name, o in CONDITIONS.items()
    }
    print(
        f"{args.checkpoint}: linear probes of the part branch's pooled blocks (ridge {args.ridge}, "
        f"{len(train.truth)} training images, keypoint visibility = {args.visibility})"
    )
    tests = {"training images (the fit)": train, **tests}
    print("| label | features | " + " | ".join(f"concordance, {n}" for n in tests) + " |")
    print("|---|---|" + "---:|" * len(tests))
    reference = [
        np.mean([concordance(t.keypoints[:, i], t.truth[:, i]) for i in range(len(PART_NAMES))]) for t in tests.values()
    ]
    print("| (the keypoint visibility itself) | – | " + " | ".join(f"{c:.2f}" for c in reference) + " |")
    names = [f"part branch B{b + 1}, mean and max" for b in range(len(train.blocks) - 1)] + ["crop pixels, 8 x 4 cells"]
    for label in ("truth", "keypoints"):
        for b in range(len(train.blocks)):
            scores = []
            for test in tests.values():
                per_part = []
                for i in range(len(PART_NAMES)):
                    target = train.label(label)[:, i]
                    known = ~torch.isnan(target)
                    model = ridge(train.blocks[b][known, i], target[known], args.ridge)
                    per_part.append(concordance(predict(model, test.blocks[b][:, i]).float(), test.truth[:, i]))
                scores.append(float(np.mean(per_part)))
            print(f"| {label} | {names[b]} | " + " | ".join(f"{s:.2f}" for s in scores) + " |")
        for hidden in (0, 64):
            probes = []
            for i in range(len(PART_NAMES)):
                target = train.label(label)[:, i]
                known = ~torch.isnan(target)
                probes.append(fit_map_probe(train.map[known, i], target[known].float(), hidden))
            scores = [
                float(
                    np.mean(
                        [
                            concordance(map_scores(probes[i], test.map[:, i]), test.truth[:, i])
                            for i in range(len(PART_NAMES))
                        ]
                    )
                )
                for test in tests.values()
            ]
            form = "two 1x1 convolutions (64 hidden)" if hidden else "one 1x1 convolution"
            print(
                f"| {label} | last block's map, {form}, mean of sigmoids | "
                + " | ".join(f"{s:.2f}" for s in scores)
                + " |"
            )
        per_seed: list[list[float]] = []  # (seeds, conditions): the crop network's concordance for each training seed
        for seed in range(args.crop_seeds):
            network = fit_crop_network(train.crops, train.label(label), seed=seed)
            per_seed.append([])
            for test in tests.values():
                predicted = crop_scores(network, test.crops)
                per_seed[-1].append(
                    float(np.mean([concordance(predicted[:, i], test.truth[:, i]) for i in range(len(PART_NAMES))]))
                )
        spread = np.asarray(per_seed)
        cells = [
            f"{m:.2f}" + (f" ± {sd:.2f}" if args.crop_seeds > 1 else "")
            for m, sd in zip(
                spread.mean(0), spread.std(0, ddof=1) if args.crop_seeds > 1 else spread.mean(0), strict=True
            )
        ]
        print(
            f"| {label} | the crops, a small network trained for it ({args.crop_seeds} seed(s)) | "
            + " | ".join(cells)
            + " |"
        )


if __name__ == "__main__":
    main()
