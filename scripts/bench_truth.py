"""What the synthetic truth costs a validation: one evaluation-loader pass with and without it, and the attention figures.

Run from the repository root after `make train` has generated the default synthetic set:
`python scripts/bench_truth.py` (process CPU time, one thread, two repetitions).
"""

from __future__ import annotations

import time

import torch
from omegaconf import open_dict

from reid.conf import compose_config
from reid.metrics.attention_health import AttentionHealth
from reid.models import AttentionReIDNet
from reid.tasks import build_datamodule


def main() -> None:
    """Prints the seconds of CPU of each pass."""
    torch.set_num_threads(1)
    cfg = compose_config([])
    with open_dict(cfg):
        cfg.data.num_workers = 0
    datamodule = build_datamodule(cfg)
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

    for _ in range(2):
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


if __name__ == "__main__":
    main()
