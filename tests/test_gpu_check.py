"""`make gpu-check`: one error line without CUDA; every step of the script runs (on the CPU, toy sizes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT


def test_gpu_check_without_cuda_stops_with_one_error_line():
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "GPU_PYTHON": sys.executable},
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: make gpu-check needs a CUDA GPU")
    assert "make gpu-check" in (ROOT / "Makefile").read_text() and "gpu-check" in (ROOT / "README.md").read_text()


@pytest.mark.slow
def test_every_step_of_the_gpu_check_runs_and_lands_in_one_json(tmp_path):
    out = tmp_path / "figures.json"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "gpu_check.py"),
            "--cpu-smoke",
            "--out",
            str(out),
            "--data-dir",
            str(tmp_path / "data"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    figures = json.loads(out.read_text())
    steps = figures["steps"]
    assert set(steps) == {"train_bf16", "train_bf16_device", "train_compiled", "ddp_nccl", "bench", "loader", "step"}
    assert figures["ok"] and all(step["ok"] for step in steps.values())
    for name in ("train_bf16", "train_bf16_device", "train_compiled", "ddp_nccl"):
        assert 0.0 <= steps[name]["rank1"] <= 1.0 and steps[name]["train_images_per_s"] > 0
        assert steps[name]["attention_saturated"] < 0.5  # the health figures travel too
    rows = steps["bench"]["rows"]  # both networks at two batch sizes (the launch-overhead question)
    assert {(row["model"], row["batch_size"]) for row in rows} == {
        (model, batch) for model in ("intra_inter", "ResNet-50") for batch in (8, 16)
    }
    loader = steps["loader"]
    for pipeline in ("cpu", "device"):  # both data paths, each against what training consumed
        assert all(rate > 0 for rate in loader[pipeline]["delivered_images_per_s"].values())
        assert steps["step"][pipeline]["images_per_s"] > 0
        assert steps["step"][pipeline]["busy_share"] > 0
    assert loader["consumed_images_per_s"] == steps["train_bf16"]["train_images_per_s"]
