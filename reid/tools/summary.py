"""Model complexity: `reid-summary model=<name>` prints params and MACs as one JSON line (Table 12's setting)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from hydra.utils import instantiate

from reid.conf import compose_config
from reid.conf.tool import option, run_tool

PAPER_WHOLE = [384, 192]
PAPER_PART = [96, 192]
PAPER_CLASSES = 751  # Market-1501's training identities, as in Table 12


@dataclass
class SummaryOptions:
    """The options of ``reid-summary`` (``key=value``)."""

    model: str = option("intra_inter", "a model of conf/model/")
    num_classes: int = option(PAPER_CLASSES, "identities (classifier size; Table 12: Market-1501's 751)", low=1)
    whole_size: list[int] = option(PAPER_WHOLE, "whole-body input [height,width]", low=8)
    part_size: list[int] = option(PAPER_PART, "part input [height,width]", low=8)
    overrides: list[str] = option([], "other changes to the training config, e.g. [model.net.width=0.5]")


def summarize(options: SummaryOptions) -> dict[str, object]:
    """Parameter counts and multiply-accumulates of the configured network (at the paper's sizes by default)."""
    from reid.models.complexity import count_macs, count_parameters

    # `~recipe`: the model as its config group defines it, not as a data set's recipe adapts it
    # (the synthetic demo halves the width)
    cfg = compose_config(["~recipe", f"model={options.model}", *options.overrides])
    net = instantiate(cfg.model.net)(num_classes=options.num_classes)
    whole, part = tuple(options.whole_size), tuple(options.part_size)
    return {
        "model": options.model,
        "params": count_parameters(net),
        "params_no_classifier": count_parameters(net, exclude_classifier=True),
        "macs": count_macs(net, whole_size=whole, part_size=part),  # type: ignore[arg-type]
        "whole_size": list(whole),
        "part_size": list(part),
        "num_classes": options.num_classes,
    }


def print_summary(options: SummaryOptions) -> int:
    """Prints the summary of the configured model as one JSON line."""
    print(json.dumps(summarize(options)))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``reid-summary`` / ``python -m reid.tools.summary``."""
    return run_tool(print_summary, SummaryOptions, "summary", argv)


if __name__ == "__main__":
    raise SystemExit(main())
