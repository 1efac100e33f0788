"""One run, one folder: default folders never shared, a folder in use refused, results never overwritten silently."""

from __future__ import annotations

import contextlib
import io
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, TINY_OVERRIDES
from omegaconf import OmegaConf, open_dict

from reid import rundir
from reid.conf import compose_config
from reid.rundir import (
    RunDirGuard,
    config_changes,
    lock_folder,
    release_folder,
    restore_replaced_results,
    set_aside_results,
)

COMMON = [o for o in TINY_OVERRIDES if not o.startswith("callbacks=")] + [
    "callbacks=model_checkpoint",
    "trainer.max_epochs=1",
]


def _train(*overrides: str, common: bool = True, file_size_limit: int | None = None) -> subprocess.CompletedProcess:
    def limit_file_size() -> None:  # a full disk at that byte of any file (Python ignores SIGXFSZ)
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    env = {key: value for key, value in os.environ.items() if key != "REID_DEBUG"}
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *(COMMON if common else []), *overrides],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**env, "OMP_NUM_THREADS": "1"},
        preexec_fn=limit_file_size if file_size_limit else None,
    )


def _start(via: str, *overrides: str) -> subprocess.CompletedProcess:
    """``python train.py <COMMON> <overrides>`` (``via="train.py"``), or only the part of it that refuses a run
    folder (``via="guard"``): the guard Hydra calls with the composed config before it writes anything,
    run in this process (no new Python, no torch to import)."""
    if via == "train.py":
        return _train(*overrides)
    folder = next(o.split("=", 1)[1] for o in overrides if o.startswith("hydra.run.dir="))
    config = compose_config([*COMMON, *(o for o in overrides if not o.startswith("hydra."))])
    with open_dict(config):
        config.hydra = {"run": {"dir": folder}}
    stderr, status = io.StringIO(), 0
    try:
        with contextlib.redirect_stderr(stderr):
            RunDirGuard().on_run_start(config)
    except SystemExit as stopped:
        status = stopped.code
    finally:  # a process's locks go when it ends: this one goes on
        release_folder(folder)
        rundir._pending_replacements.clear()
    return subprocess.CompletedProcess(["RunDirGuard().on_run_start", *overrides], status, "", stderr.getvalue())


# the guard in this process in the fast loop; the whole train.py (a new Python, 5 s) in CI
VIA = ["guard", pytest.param("train.py", marks=pytest.mark.slow)]


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


# holds a folder's lock in a process of its own until its stdin closes
_HOLD_LOCK = (
    "import sys; from reid.rundir import lock_folder; lock_folder(sys.argv[1]); print('held', flush=True); "
    "sys.stdin.read()"
)


@pytest.mark.parametrize("via", VIA)
def test_a_folder_in_use_by_a_live_process_is_refused_in_one_line(tmp_path, data_dir, via):
    folder = tmp_path / "run"
    holder = None
    if via == "train.py":
        lock_folder(folder)  # this test process holds it, as a running train.py would
        holder_pid = os.getpid()
    else:  # the guard runs in this process: another one holds the folder
        holder = subprocess.Popen(
            [sys.executable, "-c", _HOLD_LOCK, str(folder)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        holder_pid = holder.pid
    try:
        stderr = _refused(_start(via, f"hydra.run.dir={folder}", f"paths.data_dir={data_dir}"), "the run folder ")
        assert f"is in use by pid {holder_pid}" in stderr
        assert not (folder / ".hydra").exists() and not (folder / "train.log").exists()  # nothing written
    finally:
        release_folder(folder)
        if holder is not None:
            holder.communicate(timeout=60)  # its stdin closes: it ends


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
    assert (folder / "metrics.json").read_bytes() != metrics  # set-up passed: the old results are gone
    assert not any(p.name.startswith(".replaced") for p in folder.iterdir())


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


def _one_error_line(result: subprocess.CompletedProcess) -> str:
    """The run stopped with status 2 and exactly one ``error:`` line, no traceback; returns that line."""
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    return errors[0]


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file of a run folder and its bytes, but the lock and the log (every start writes those)."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name not in (".lock", "train.log")
    }


def _finished_run(folder: Path, *overrides: str) -> dict[str, bytes]:
    """A folder as a finished run of ``COMMON`` leaves it (its record composed as Hydra stores it), without training."""
    (folder / ".hydra").mkdir(parents=True)
    OmegaConf.save(compose_config([*COMMON, *overrides]), folder / ".hydra" / "config.yaml")
    (folder / ".hydra" / "overrides.yaml").write_text("- trainer.max_epochs=1\n")
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "last.ckpt").write_bytes(b"the finished run's weights")
    (folder / "metrics.json").write_text('{"rank1": 0.5}\n')
    return _snapshot(folder)


@pytest.mark.parametrize(
    "damage",
    [b"\xff\xfe\x00 garbage: [", b"task_name: train\ntags: []\nseed: 4"],
    ids=["not-yaml", "cut-short-after-a-resume"],
)
@pytest.mark.parametrize("via", VIA)
def test_a_resume_against_a_damaged_record_stops_in_one_line_and_changes_nothing(tmp_path, data_dir, damage, via):
    folder = tmp_path / "run"
    _finished_run(folder)
    record = folder / ".hydra" / "config.yaml"
    kept = folder / ".hydra" / "history" / "000" / "config.yaml"
    if b"seed" in damage:  # resumed once: the record from before that resume was kept
        kept.parent.mkdir(parents=True)
        kept.write_bytes(record.read_bytes())
    record.write_bytes(damage)
    before = _snapshot(folder)

    result = _start(
        via, f"hydra.run.dir={folder}", f"paths.data_dir={data_dir}", "ckpt_path=last", "seed=3", "data.batch_size=4"
    )
    line = _one_error_line(result)
    assert line.startswith(f"error: the run's record {record} cannot be read (")
    restore = f"{kept} (the record as it was before the last resume) or a backup" if kept.exists() else "a backup"
    assert f"restore it from {restore}, delete it to resume without comparing the settings" in line
    assert _snapshot(folder) == before and not (folder / "train.log").exists()  # not started: no record replaced


@pytest.mark.parametrize("via", VIA)
def test_a_lock_that_is_a_folder_stops_the_run_in_one_line_and_keeps_the_finished_run(tmp_path, data_dir, via):
    folder = tmp_path / "run"
    before = _finished_run(folder)
    (folder / ".lock").mkdir()

    line = _one_error_line(_start(via, f"hydra.run.dir={folder}", f"paths.data_dir={data_dir}"))
    assert line.startswith(f"error: the run folder's lock {folder / '.lock'} is not a file") and "rm -r" in line
    assert _snapshot(folder) == before and not (folder / "train.log").exists()


@pytest.mark.slow
def test_a_full_disk_while_keeping_the_record_stops_the_resume_with_the_record_intact(tmp_path, data_dir):
    folder = tmp_path / "run"
    before = _finished_run(folder)
    limit = 2048  # the lock's line fits; a copy of the record does not
    assert (folder / ".hydra" / "config.yaml").stat().st_size > limit

    result = _train(
        f"hydra.run.dir={folder}",
        f"paths.data_dir={data_dir}",
        "ckpt_path=last",
        "data.batch_size=4",
        "resume_with_changes=true",
        file_size_limit=limit,
    )
    line = _one_error_line(result)
    assert line.startswith(f"error: could not keep a copy of the run's record {folder / '.hydra' / 'config.yaml'}")
    assert "file too large" in line.lower() and "the record is unchanged" in line
    assert _snapshot(folder) == before  # the record as it was, no partial copy in history/
    assert list((folder / ".hydra" / "history").iterdir()) == []
    assert not (folder / "resume_changes.log").exists()


@pytest.mark.slow
def test_overwrite_keeps_the_old_results_when_the_new_run_fails_at_set_up(tmp_path):
    folder = tmp_path / "run"
    before = _finished_run(folder)

    result = _train(
        f"hydra.run.dir={folder}",
        "overwrite=true",
        "data=market",
        "paths.data_dir=/nonexistent",
        "logger=none",
        "callbacks=none",
        "trainer.accelerator=cpu",
        common=False,
    )
    assert _one_error_line(result).startswith("error: Market-1501 not found")
    assert _snapshot(folder) == before  # results and record, the new run's record removed
    assert sorted(p.name for p in folder.iterdir()) == [".hydra", ".lock", "checkpoints", "metrics.json", "train.log"]


@pytest.mark.parametrize("via", VIA)
def test_a_run_killed_between_setting_aside_and_replacing_loses_nothing(tmp_path, data_dir, via):
    folder = tmp_path / "run"
    before = _finished_run(folder)
    # overwrite=true set the old results aside, then the process died before its set-up passed
    killed = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, signal; from pathlib import Path; from omegaconf import OmegaConf; "
            "from reid.rundir import check_run_folder; "
            f"check_run_folder(Path({str(folder)!r}), OmegaConf.create({{'overwrite': True}})); "
            "os.kill(os.getpid(), signal.SIGKILL)",
        ],
        cwd=ROOT,
    )
    assert killed.returncode == -signal.SIGKILL
    assert not (folder / "metrics.json").exists() and (folder / ".replaced" / "metrics.json").is_file()
    (folder / ".hydra" / "config.yaml").write_text("the killed run's record\n")  # Hydra had written it

    # the next run in the folder puts them back first: a fresh run is refused as it was before the kill
    result = _start(via, f"hydra.run.dir={folder}", f"paths.data_dir={data_dir}")
    assert "already holds a run's results" in _one_error_line(result)
    assert "warning: put back the previous results" in result.stderr
    assert _snapshot(folder) == before


def test_every_interrupted_step_of_a_replacement_is_recovered(tmp_path):
    folder = tmp_path / "run"
    before = _finished_run(folder)
    try:
        # killed while setting aside: part moved, part in place
        (folder / ".replaced.partial").mkdir()
        (folder / "metrics.json").rename(folder / ".replaced.partial" / "metrics.json")
        assert restore_replaced_results(folder) and _snapshot(folder) == before

        # killed while putting back: the new run's files already removed, part moved back
        set_aside_results(folder)
        (folder / "metrics.json").write_text("the new run's\n")
        (folder / ".replaced").rename(folder / ".replaced.partial")
        (folder / "metrics.json").unlink()
        (folder / ".replaced.partial" / "checkpoints").rename(folder / "checkpoints")
        assert restore_replaced_results(folder) and _snapshot(folder) == before

        # killed while deleting after the new run passed set-up: the new run's results stand
        set_aside_results(folder)
        (folder / "metrics.json").write_text("the new run's\n")
        (folder / ".replaced").rename(folder / ".replaced.discard")
        assert not restore_replaced_results(folder)
        assert (folder / "metrics.json").read_text() == "the new run's\n" and not (folder / "checkpoints").exists()
        assert not any(p.name.startswith(".replaced") for p in folder.iterdir())
    finally:
        rundir._pending_replacements.clear()


@pytest.mark.parametrize("hook", ["on_run_start", "on_multirun_start"])
def test_any_failure_in_the_guard_stops_the_run_in_one_line(tmp_path, monkeypatch, capsys, hook):
    monkeypatch.delenv("REID_DEBUG", raising=False)
    folder = tmp_path / "run"
    monkeypatch.setattr(rundir, "check_run_folder", lambda folder, cfg: 1 / 0)  # a bug in the guard
    (folder / ".lock").mkdir(parents=True)  # the sweep's folder cannot be locked
    config = OmegaConf.create({"hydra": {"run": {"dir": str(folder)}, "sweep": {"dir": str(folder)}}, "seed": 1})

    with pytest.raises(SystemExit) as stopped:
        getattr(RunDirGuard(), hook)(config)  # Hydra lets SystemExit through; any other exception is a warning
    assert stopped.value.code == 2
    stderr = capsys.readouterr().err
    assert stderr.count("\n") == 1 and stderr.startswith("error: ")
    if hook == "on_run_start":
        assert stderr.startswith(f"error: the check of the run folder {folder} failed (ZeroDivisionError: ")
    else:
        assert stderr.startswith(f"error: the run folder's lock {folder / '.lock'} is not a file")


@pytest.mark.parametrize("status", ["COMPLETED", "FAILED"])
def test_a_task_that_finishes_replaces_the_set_aside_results_and_one_that_fails_gets_them_back(tmp_path, status):
    from hydra.core.utils import JobReturn, JobStatus

    folder = tmp_path / "run"
    before = _finished_run(folder)
    config = OmegaConf.create({"hydra": {"run": {"dir": str(folder)}}, "overwrite": True, "task_name": "evaluate"})
    try:
        RunDirGuard().on_run_start(config)
        assert not (folder / "metrics.json").exists() and (folder / ".replaced" / "metrics.json").is_file()
        (folder / "metrics.json").write_text("the new run's\n")
        RunDirGuard().on_run_end(config, job_return=JobReturn(status=JobStatus[status]))
        if status == "COMPLETED":
            assert (folder / "metrics.json").read_text() == "the new run's\n" and not (folder / "checkpoints").exists()
        else:
            assert _snapshot(folder) == before
        assert not any(p.name.startswith(".replaced") for p in folder.iterdir())
        assert not rundir._pending_replacements  # nothing left for the exit to put back
    finally:
        release_folder(folder)
        rundir._pending_replacements.clear()
