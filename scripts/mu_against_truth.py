"""Does a checkpoint's mu follow visibility? Its part weights against the synthetic truth and the keypoints,
per condition.

For the query images of the default preset, the occluded condition and the hard preset (the
generator options are the default set's; the checkpoint's crop sizes are kept): mean and spread
of mu over images, Spearman rho of each part's mu with its true visible share (synthetic-only)
and with its keypoints' mean confidence (any data set with keypoints), and mu's concordance
index with the true visible share (the pairs tied in the truth left out). One Markdown row per
condition.

`python scripts/mu_against_truth.py <checkpoint>`, from the repository root.
"""

from __future__ import annotations

import sys

import torch

from reid.lit.module import ReIDModule
from reid.metrics.truth import concordance, spearman
from reid.names import PART_NAMES
from reid.tasks import build_datamodule, condition_config

CONDITIONS = {
    "default preset": [],
    "occluded condition": ["data=synthetic_occluded"],
    "hard preset": ["data.options.preset=hard"],
}


def main(argv: list[str]) -> None:
    """Prints the table for the checkpoint ``argv[0]``."""
    checkpoint = argv[0]
    torch.set_num_threads(1)
    module = ReIDModule.load_from_checkpoint(checkpoint).eval()
    stored = torch.load(checkpoint, map_location="cpu", weights_only=True)
    print(f"{checkpoint}: mu of the query images")
    print(
        "| condition | mu mean | mu std over images | "
        + " | ".join(f"rho {p}" for p in PART_NAMES)
        + " | mean rho (truth) | mean rho (keypoints) | mean concordance (truth) |"
    )
    print("|---|---:|---:|" + "---:|" * (len(PART_NAMES) + 3))
    for name, overrides in CONDITIONS.items():
        cfg = condition_config(stored, overrides)
        visible, weights, confidence = [], [], []
        with torch.no_grad():
            for batch in build_datamodule(cfg).val_dataloader():
                query = batch["is_query"].bool()
                if not query.any():
                    continue
                output = module(
                    batch["whole"][query], batch["parts"][query], part_visibility=batch["part_confidence"][query]
                )
                if output.part_weights is None:
                    sys.exit(f"error: {checkpoint} has no part weights (model.net.fusion=inter): nothing to measure")
                visible.append(batch["truth_visible"][query][:, 1:])
                weights.append(output.part_weights.float())
                confidence.append(batch["part_confidence"][query])
        shares, mu, conf = torch.cat(visible), torch.cat(weights), torch.cat(confidence)
        rho = [spearman(mu[:, i], shares[:, i]) for i in range(len(PART_NAMES))]
        rho_conf = [spearman(mu[:, i], conf[:, i]) for i in range(len(PART_NAMES))]
        concordant = [concordance(mu[:, i], shares[:, i]) for i in range(len(PART_NAMES))]
        print(
            f"| {name} | {float(mu.mean()):.2f} | {float(mu.std(dim=0).mean()):.3f} | "
            + " | ".join(f"{r:+.2f}" for r in rho)
            + f" | {sum(rho) / len(rho):+.2f} | {sum(rho_conf) / len(rho_conf):+.2f}"
            + f" | {sum(concordant) / len(concordant):.2f} |"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
