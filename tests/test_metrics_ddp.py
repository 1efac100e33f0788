"""ReIDMetric synced over a 2-process gloo group equals the single-process result (ranks run as subprocesses)."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from reid.metrics import ReIDMetric

WORKER_SCRIPT = textwrap.dedent("""
    import os, sys
    import numpy as np
    import torch
    import torch.distributed as dist
    from reid.metrics import ReIDMetric

    def make_data():
        rng = np.random.default_rng(0)
        q, g = 11, 30
        feats = torch.from_numpy(rng.normal(size=(q + g, 5)).astype(np.float32))
        pids = torch.from_numpy(np.concatenate([rng.integers(0, 4, q), rng.integers(0, 4, g)]))
        cams = torch.from_numpy(rng.integers(0, 3, q + g))
        is_query = torch.arange(q + g) < q
        indices = torch.cat([torch.arange(q), torch.arange(g)])
        return feats, pids, cams, is_query, indices

    def worker(rank, world, port, out):
        torch.set_num_threads(1)
        os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
        dist.init_process_group("gloo", rank=rank, world_size=world)
        data = make_data()
        n = len(data[0])
        # what a DistributedSampler does: pad to a multiple of the world size with repeats
        order = list(range(n)) + list(range((-n) % world))
        mine = torch.tensor(order[rank::world])
        results = {}
        for name, kw in {"market": {}, "cuhk03": {"protocol": "cuhk03", "num_repeats": 5}}.items():
            metric = ReIDMetric(max_rank=10, **kw)
            for part in torch.split(mine, 4):
                metric.update(*(t[part] for t in data))
            results[name] = metric.compute()
        if rank == 0:
            torch.save(results, out)
        dist.destroy_process_group()

    if __name__ == "__main__":
        worker(int(sys.argv[1]), 2, int(sys.argv[2]), sys.argv[3])
""")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# two processes (a gloo group): CI, with the DDP runs of test_distributed.py
@pytest.mark.slow
def test_two_process_gloo_metric_equals_single_process(tmp_path: Path):
    script = tmp_path / "ddp_metric.py"
    script.write_text(WORKER_SCRIPT)
    out = tmp_path / "result.pt"
    port = free_port()
    # two plain processes, one per rank (lighter than a spawning parent, and no pytest re-run)
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(rank), str(port), str(out)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=Path(__file__).resolve().parents[1],
        )
        for rank in range(2)
    ]
    try:
        logs = [p.communicate(timeout=120)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0], "\n".join(logs)[-3000:]
    synced = torch.load(out)

    namespace: dict = {}
    exec(compile(WORKER_SCRIPT.split("def worker")[0], "worker", "exec"), namespace)
    data = namespace["make_data"]()
    for name, kw in {"market": {}, "cuhk03": {"protocol": "cuhk03", "num_repeats": 5}}.items():
        single = ReIDMetric(max_rank=10, **kw)
        single.update(*data)
        expected = single.compute()
        assert set(synced[name]) == set(expected)
        for key, value in expected.items():
            torch.testing.assert_close(synced[name][key], value, equal_nan=True)
    # the check is not vacuous: the metric saw real matches
    assert 0 < float(synced["market"]["mAP"]) < 1
    assert np.isnan(float(synced["cuhk03"]["mAP"]))
