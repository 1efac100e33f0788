"""One run, one folder: default folders never shared, a folder in use refused, results never overwritten silently."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from conftest import ROOT, TINY_OVERRIDES
from reid.rundir import config_changes, lock_folder, release_folder

COMMON = [o for o in TINY_OVERRIDES if not o.startswith("callbacks=")] + [
    "callbacks=model_checkpoint",
    "trainer.max_epochs=1",
]


def _train(*overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *COMMON, *overrides],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def _refused(result: subprocess.CompletedProcess, start: str) -> str:
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(f"error: {start}"), result.stderr[-2000:]
    return result.stderr


@pytest.mark.slow
def test_two_runs_started_together_with_default_folders_keep_both_results(tmp_path, data_dir):
    command = [
        sys.executable,
        str(ROOT / "train.py"),
        *COMMON,
        f"paths.log_dir={tmp_path}",
        f"paths.data_dir={data_dir}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = [
        subprocess.Popen(
            command + [f"seed={seed}"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        for seed in (1, 2)
    ]
    assert [run.wait(timeout=300) for run in runs] == [0, 0]
    folders = sorted((tmp_path / "train" / "runs").iterdir())
    assert len(folders) == 2
    for folder in folders:
        assert (folder / "metrics.json").is_file() and (folder / "checkpoints" / "last.ckpt").is_file()
        seed = OmegaConf.load(folder / ".hydra" / "config.yaml").seed
        assert f"seed={seed}" in (folder / ".hydra" / "overrides.yaml").read_text()


def test_a_folder_in_use_by_a_live_process_is_refused_in_one_line(tmp_path, data_dir):
    folder = tmp_path / "run"
    lock_folder(folder)  # this test process holds it, as a running train.py would
    try:
        stderr = _refused(_train(f"hydra.run.dir={folder}", f"paths.data_dir={data_dir}"), "the run folder ")
        assert f"is in use by pid {os.getpid()}" in stderr
        assert not (folder / ".hydra").exists() and not (folder / "train.log").exists()  # nothing written
    finally:
        release_folder(folder)


@pytest.mark.slow
def test_a_finished_run_is_never_overwritten_or_resumed_with_another_config_silently(tmp_path, data_dir):
    folder = tmp_path / "run"
    where = [f"hydra.run.dir={folder}", f"paths.data_dir={data_dir}"]
    assert _train(*where).returncode == 0
    metrics, record = (folder / "metrics.json").read_bytes(), (folder / ".hydra" / "config.yaml").read_bytes()
    log = (folder / "train.log").read_bytes()

    _refused(_train(*where), f"{folder} already holds a run's results")
    stderr = _refused(
        _train(*where, "ckpt_path=last", "model=baseline"), f"cannot resume the run in {folder} with another"
    )
    assert "model.regions: pose -> strips" in stderr
    stderr = _refused(
        _train(*where, "ckpt_path=last", "data.batch_size=4"), f"resuming the run in {folder} with changed"
    )
    assert "data.batch_size: 8 -> 4" in stderr and "resume_with_changes=true" in stderr
    # nothing of the refused runs reached the folder
    assert (folder / "metrics.json").read_bytes() == metrics
    assert (folder / ".hydra" / "config.yaml").read_bytes() == record
    assert (folder / "train.log").read_bytes() == log

    # said to be intended: the run goes on; the change is logged and the first record kept
    resumed = _train(*where, "ckpt_path=last", "trainer.max_epochs=2", "resume_with_changes=true")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "trainer.max_epochs: 1 -> 2" in (folder / "resume_changes.log").read_text()
    first = OmegaConf.load(folder / ".hydra" / "history" / "000" / "config.yaml")
    assert first.trainer.max_epochs == 1 and OmegaConf.load(folder / ".hydra" / "config.yaml").trainer.max_epochs == 2

    replaced = _train(*where, "overwrite=true", "seed=5")
    assert replaced.returncode == 0, replaced.stderr[-2000:]
    assert OmegaConf.load(folder / ".hydra" / "config.yaml").seed == 5


def test_config_changes_separates_the_network_from_other_settings():
    stored = OmegaConf.create(
        {
            "model": {"net": {"width": 1.0}, "lambda_intra": 0.5},
            "data": {"batch_size": 32},
            "ckpt_path": None,
            "paths": {"output_dir": "a"},
        }
    )
    new = OmegaConf.create(
        {
            "model": {"net": {"width": 0.5}, "lambda_intra": 0.5},
            "data": {"batch_size": 64},
            "ckpt_path": "last",
            "paths": {"output_dir": "b"},
        }
    )
    assert config_changes(stored, new) == (["model.net.width: 1.0 -> 0.5"], ["data.batch_size: 32 -> 64"])
    assert config_changes(stored, stored) == ([], [])
