"""Where the full model loses to ``intra``: its branches, or how its test feature combines them.

For each checkpoint, one pass over the harder preset's evaluation images (and its occluded
condition) scores several test features built from the same forward pass:

- ``global``: E_g alone; ``parts``: the plain concatenation of E_1..E_4;
- ``as trained``: the network's own test feature (``intra``: ``[E_g, E_1..E_4]``; inter-attention:
  ``[E_g, (1 + mu_i) sqrt(d/2) E_i/|E_i|]``);
- ``concatenation``: ``[E_g, E_1..E_4]``, the features as they leave the branches (``intra``'s test
  feature, for any model);
- ``unit branches``: every branch's feature L2-normalised, then concatenated (each branch counts
  alike whatever its scale).

Paired by seed against ``intra`` checkpoints, these say whether inter-attention's checkpoints carry
worse branch features (a training effect) or good branches badly combined at test time (a
feature effect: the weights and norms of Eq. 9). Prints the mean ± std over seeds of every form,
then each model minus the first, paired by seed (read from the checkpoints).
`python scripts/fusion_gap.py <label>=<checkpoint> [<label>=<checkpoint> ...]`, from the repository
root (about 20 s per checkpoint).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from reid.lit.module import ReIDModule
from reid.metrics import evaluate_features
from reid.models.network import NetworkOutput
from reid.tasks import build_datamodule, condition_config

CONDITIONS = {
    "hard preset": ["data.options.preset=hard"],
    "occluded condition": ["data=synthetic_occluded", "data.options.preset=hard"],
}

FORMS = ("global", "parts", "as trained", "concatenation", "unit branches")


def feature_forms(output: NetworkOutput) -> dict[str, Tensor]:
    """The test features of :data:`FORMS` from one forward pass's output."""
    parts = output.part_features.flatten(1)
    unit_parts = F.normalize(output.part_features, dim=-1).flatten(1)
    return {
        "global": output.global_feature,
        "parts": parts,
        "as trained": output.feature,
        "concatenation": torch.cat([output.global_feature, parts], dim=1),
        "unit branches": torch.cat([F.normalize(output.global_feature, dim=-1), unit_parts], dim=1),
    }


def score(checkpoint: str) -> dict[str, dict[str, tuple[float, float]]]:
    """``{condition: {form: (R1, mAP)}}`` in percent for one checkpoint."""
    module = ReIDModule.load_from_checkpoint(checkpoint).eval()
    stored = torch.load(checkpoint, map_location="cpu", weights_only=True)
    results: dict[str, dict[str, tuple[float, float]]] = {}
    for name, overrides in CONDITIONS.items():
        cfg = condition_config(stored, overrides)
        chunks: dict[str, list[Tensor]] = {form: [] for form in FORMS}
        pids, camids, is_query = [], [], []
        with torch.no_grad():
            for batch in build_datamodule(cfg).val_dataloader():
                output = module(batch["whole"], batch["parts"], part_visibility=batch.get("part_confidence"))
                for form, feature in feature_forms(output).items():
                    chunks[form].append(feature)
                pids.append(batch["pid"])
                camids.append(batch["camid"])
                is_query.append(batch["is_query"].bool())
        pid, camid, query = torch.cat(pids), torch.cat(camids), torch.cat(is_query)
        results[name] = {}
        for form, parts in chunks.items():
            feature = torch.cat(parts)
            scores = evaluate_features(
                feature[query], feature[~query], pid[query], pid[~query], camid[query], camid[~query]
            )
            results[name][form] = (100 * float(scores["rank1"]), 100 * float(scores["mAP"]))
    return results


def summarise(
    scores: dict[str, dict[int, dict[str, dict[str, tuple[float, float]]]]],
) -> list[str]:
    """Markdown tables from ``{label: {seed: {condition: {form: (R1, mAP)}}}}``: means, then paired differences.

    Means are over seeds (± sample std); each label after the first is paired with the first by seed
    (the seeds both hold), and its difference is given for every form alike.
    """
    lines = ["| model | query images | " + " | ".join(f"R1 / mAP, {form}" for form in FORMS) + " |"]
    lines.append("|---|---|" + "---:|" * len(FORMS))

    def cell(values: list[tuple[float, float]], signed: bool = False) -> str:
        r1, ap = np.asarray([v[0] for v in values]), np.asarray([v[1] for v in values])
        fmt = "+.1f" if signed else ".1f"
        spread = (lambda x: f" ± {x.std(ddof=1):.1f}") if len(values) > 1 else (lambda x: "")
        return f"{r1.mean():{fmt}}{spread(r1)} / {ap.mean():{fmt}}{spread(ap)}"

    conditions = list(CONDITIONS)
    for label, by_seed in scores.items():
        for condition in conditions:
            cells = [cell([run[condition][form] for run in by_seed.values()]) for form in FORMS]
            lines.append(f"| {label} (n={len(by_seed)}) | {condition} | " + " | ".join(cells) + " |")
    reference, *others = list(scores)
    if others:
        lines += ["", "| pair, same seed | query images | " + " | ".join(FORMS) + " |"]
        lines.append("|---|---|" + "---:|" * len(FORMS))
    for label in others:
        seeds = sorted(set(scores[label]) & set(scores[reference]))
        for condition in conditions:
            cells = []
            for form in FORMS:
                differences = [
                    (
                        scores[label][seed][condition][form][0] - scores[reference][seed][condition][form][0],
                        scores[label][seed][condition][form][1] - scores[reference][seed][condition][form][1],
                    )
                    for seed in seeds
                ]
                cells.append(cell(differences, signed=True))
            lines.append(f"| {label} − {reference} ({len(seeds)} seeds) | {condition} | " + " | ".join(cells) + " |")
    return lines


def main(arguments: list[str]) -> None:
    """Scores every ``label=checkpoint`` argument, then prints the tables of :func:`summarise`."""
    torch.set_num_threads(1)
    scores: dict[str, dict[int, dict[str, dict[str, tuple[float, float]]]]] = {}
    for argument in arguments:
        label, separator, checkpoint = argument.partition("=")
        if not separator or not label or not Path(checkpoint).is_file():
            raise SystemExit(
                f"error: {argument!r} is not label=<checkpoint file>; e.g. intra=outputs/<run>/checkpoints/last.ckpt"
            )
        seed = int(torch.load(checkpoint, map_location="cpu", weights_only=True)["reid_config"]["seed"])
        scores.setdefault(label, {})[seed] = score(checkpoint)
        print(f"scored {label} seed {seed}: {checkpoint}", file=sys.stderr, flush=True)
    print("\n".join(summarise(scores)))


if __name__ == "__main__":
    main(sys.argv[1:])
