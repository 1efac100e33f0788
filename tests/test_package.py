"""A package that installs like one: a non-editable install, used from another folder, trains with its own configs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig

import pytest
from conftest import ROOT, TINY_OVERRIDES


@pytest.mark.slow
def test_a_non_editable_install_runs_reid_train_from_another_folder(tmp_path):
    # the wheel as `pip install .` builds it (no network: this environment's setuptools builds it)
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path / "wheel"),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    wheel = next((tmp_path / "wheel").glob("reid-*.whl"))
    # a clean environment that sees this one's dependencies (torch...) but not its editable `reid`
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    with open(os.path.join(purelib, "_dependencies.pth"), "w") as handle:
        handle.write(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index", str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr[-3000:]

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ""}
    where = subprocess.run(
        [str(python), "-c", "import reid; print(reid.__file__)"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert where.startswith(purelib), where  # the installed copy, not the repository
    overrides = [o for o in TINY_OVERRIDES if not o.startswith(("logger=", "callbacks="))]
    run = subprocess.run(
        [
            str(venv / "bin" / "reid-train"),
            "trainer.fast_dev_run=true",
            f"paths.data_dir={tmp_path / 'data'}",
            *overrides,
            "logger=csv",
        ],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    (metrics,) = list((elsewhere / "outputs" / "train" / "runs").glob("*/metrics.json"))
    assert 0.0 <= json.loads(metrics.read_text())["rank1"] <= 1.0
    for tool in (
        "reid-evaluate",
        "reid-report",
        "reid-export",
        "reid-bench",
        "reid-summary",
        "reid-extract-pose",
        "reid-search",
    ):
        assert (venv / "bin" / tool).is_file(), tool
    # a tool composes its options (and the model's config) from the installed package too
    summary = subprocess.run(
        [str(venv / "bin" / "reid-summary"), "model=baseline", "overrides=[model.net.width=0.25]"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert summary.returncode == 0 and json.loads(summary.stdout)["model"] == "baseline", summary.stderr[-2000:]
