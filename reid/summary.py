"""Model complexity: `python -m reid.summary model=<name>` prints params and MACs as one JSON line."""

from __future__ import annotations

import json
import sys
from typing import Sequence

from hydra.utils import instantiate

from reid.cli import compose_config

PAPER_WHOLE = (384, 192)
PAPER_PART = (96, 192)
PAPER_CLASSES = 751  # Market-1501's training identities, as in Table 12


def summarize(overrides: Sequence[str] = ()) -> dict[str, object]:
    """Parameter counts and multiply-accumulates of the configured network at the paper's sizes.

    Args:
        overrides: Hydra overrides such as ``["model=baseline"]``; ``num_classes=...``,
            ``whole_size=[h,w]`` and ``part_size=[h,w]`` change the measured setting.
    """
    from reid.models.complexity import count_macs, count_parameters

    own = {"num_classes": PAPER_CLASSES, "whole_size": PAPER_WHOLE, "part_size": PAPER_PART}
    hydra_overrides = []
    for item in overrides:
        key, _, value = item.partition("=")
        if key in own:
            own[key] = json.loads(value) if key != "num_classes" else int(value)
        else:
            hydra_overrides.append(item)
    # `~recipe`: the model as its config group defines it, not as a data set's recipe adapts it
    # (the synthetic demo halves the width)
    cfg = compose_config(["~recipe", *hydra_overrides])
    net = instantiate(cfg.model.net)(num_classes=int(own["num_classes"]))
    whole, part = tuple(own["whole_size"]), tuple(own["part_size"])
    return {
        "model": cfg.model.get("name") or next((o.split("=", 1)[1] for o in hydra_overrides if o.startswith("model=")), "intra_inter"),
        "params": count_parameters(net),
        "params_no_classifier": count_parameters(net, exclude_classifier=True),
        "macs": count_macs(net, whole_size=whole, part_size=part),
        "whole_size": list(whole),
        "part_size": list(part),
        "num_classes": int(own["num_classes"]),
    }


def main(argv: Sequence[str] | None = None) -> None:
    """Prints the summary of the model named on the command line as one JSON line."""
    print(json.dumps(summarize(list(sys.argv[1:] if argv is None else argv))))


if __name__ == "__main__":
    main()
