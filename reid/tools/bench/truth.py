"""Synthetic truth: what it costs a validation.

One evaluation-loader pass with and without it, and the attention figures.

Usage, from the repository root after ``make train`` has generated the default synthetic set::

    reid-bench truth                       # python -m reid.tools.bench.truth; process CPU time, one thread
    reid-bench truth repeats=3 overrides=[data=synthetic_occluded]

The figures measured on this project's machines are in docs/experiments.md.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from reid.conf.tool import option, run_tool


@dataclass
class TruthOptions:
    """The options of ``reid-bench truth`` (``key=value``)."""

    repeats: int = option(2, "loader passes timed with and without the truth", low=1)
    overrides: list[str] = option([], "other changes to the training config, e.g. [data=synthetic_occluded]")


def bench(options: TruthOptions) -> int:
    """Prints the CPU seconds of a validation loader pass and of the attention figures, without and with the truth."""
    from hydra.utils import instantiate
    from omegaconf import open_dict

    from reid.conf import compose_config
    from reid.metrics.attention_health import AttentionHealth
    from reid.models import AttentionReIDNet

    torch.set_num_threads(1)
    cfg = compose_config(list(options.overrides))
    with open_dict(cfg):
        cfg.data.num_workers = 0
    datamodule = instantiate(cfg.data, _recursive_=False)
    datamodule.prepare_data()
    datamodule.setup("fit")
    eval_set = datamodule.eval_set

    def loader_pass(with_truth: bool) -> float:
        kept = eval_set.truth, eval_set.part_confidence
        if not with_truth:
            eval_set.truth, eval_set.part_confidence = None, None
        start = time.process_time()
        for _ in datamodule.val_dataloader():
            pass
        eval_set.truth, eval_set.part_confidence = kept
        return time.process_time() - start

    for _ in range(options.repeats):
        print(f"loader pass: {loader_pass(False):.2f} s without the truth, {loader_pass(True):.2f} s with it")
    net = AttentionReIDNet(num_classes=100, intra_attention=True, fusion="inter", width=0.5).eval()
    with torch.no_grad():
        outputs = [
            (net(b["whole"], b["parts"], return_attention=True), b)
            for b in datamodule.val_dataloader()
            if b["is_query"].any()
        ]
    for with_truth in (False, True):
        health = AttentionHealth()
        start = time.process_time()
        for output, batch in outputs:
            select = batch["is_query"].bool()
            health.update(output.attention, output.part_weights, select=select, truth=batch if with_truth else None)
        health.compute()
        print(
            f"attention figures on the queries ({'with' if with_truth else 'without'} the truth): "
            f"{time.process_time() - start:.2f} s"
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``reid-bench truth`` / ``python -m reid.tools.bench.truth``."""
    return run_tool(bench, TruthOptions, "bench truth", argv)


if __name__ == "__main__":
    raise SystemExit(main())
