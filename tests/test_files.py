"""Atomic result files: a failed write (full disk, file-size limit, error, kill) leaves the previous file whole."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT
from PIL import Image

from reid import checkpoints
from reid.files import (
    FULL_ERRNOS,
    DiskFullError,
    atomic_save_image,
    atomic_write,
    atomic_write_json,
    atomic_write_text,
    device_of,
)
from reid.tasks import write_metrics

# writes a metrics.json of about 20 KB under a 1 KiB file-size limit (what a full disk does to a write)
_BIG_WRITE = """
import resource, sys
sys.path.insert(0, {root!r})
from reid.tasks import write_metrics
resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))
write_metrics({{f"metric_{{i}}": i / 1000 for i in range(1000)}}, {out!r})
"""


@pytest.mark.slow
def test_a_disk_full_write_leaves_the_previous_metrics_json_valid(tmp_path):
    write_metrics({"rank1": 0.5, "mAP": 0.25}, tmp_path)
    result = subprocess.run(
        [sys.executable, "-c", _BIG_WRITE.format(root=str(ROOT), out=str(tmp_path))], capture_output=True, text=True
    )
    assert result.returncode != 0 and "File too large" in result.stderr  # the write did fail
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"rank1": 0.5, "mAP": 0.25}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]  # no temporary file left


def test_an_error_while_writing_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = atomic_write_text(tmp_path / "report.md", "old\n")

    def fails_halfway(stream):
        stream.write(b"half of the new")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        atomic_write(target, fails_halfway)
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]


def test_atomic_files_are_complete_readable_and_as_permissive_as_the_umask(tmp_path):
    path = atomic_write_json(tmp_path / "a" / "m.json", {"x": 1}, indent=2)
    assert json.loads(path.read_text()) == {"x": 1}
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask
    picture = atomic_save_image(Image.new("RGB", (4, 3), (10, 20, 30)), tmp_path / "p.png")
    with Image.open(picture) as loaded:
        assert loaded.size == (4, 3) and loaded.getpixel((0, 0)) == (10, 20, 30)


# trains one epoch, then resumes under a 64 KiB file-size limit: the epoch-end checkpoint cannot be written
_FULL_CHECKPOINT = """
import resource, sys
sys.path[:0] = [{root!r}, {tests!r}]
import torch
torch.set_num_threads(1)
from omegaconf import open_dict
import reid.tasks as runner
from reid.conf import compose_config
from conftest import TINY_OVERRIDES

def config(*extra):
    cfg = compose_config([*TINY_OVERRIDES, "callbacks=model_checkpoint", *extra])
    with open_dict(cfg):
        cfg.paths.output_dir = {run!r}
        cfg.paths.log_dir = {logs!r}
        cfg.paths.data_dir = {data!r}
    return cfg

runner.run_cli(runner.train, config("trainer.max_epochs=1"))
with open({run!r} + "/checkpoints/last.ckpt", "rb") as handle:
    sys.stdout.buffer.write(handle.read()[-64:])  # the tail of the checkpoint, to compare after
resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))
runner.run_cli(runner.train, config("trainer.max_epochs=2", "ckpt_path=last"))
"""


@pytest.mark.slow
def test_a_checkpoint_that_does_not_fit_is_one_line_and_the_previous_one_stays(tmp_path, data_dir):
    run = tmp_path / "run"
    script = _FULL_CHECKPOINT.format(
        root=str(ROOT), tests=str(ROOT / "tests"), run=str(run), logs=str(tmp_path / "logs"), data=str(data_dir)
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=300)
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr[-3000:]
    assert "Traceback" not in stderr
    last = run / "checkpoints" / "last.ckpt"
    line = stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: file too large writing {last} (the previous last.ckpt is intact): "), line
    assert "the file-size limit of this process is 64.0 KiB" in line and "free space on " in line
    assert line.endswith(
        f"then resume with ckpt_path=last (`python train.py <same overrides> hydra.run.dir={run} ckpt_path=last`)"
    )
    # the epoch-1 checkpoint, whole, and no temporary file beside it
    assert last.read_bytes()[-64:] == result.stdout[-64:]
    assert checkpoints.load_checkpoint(last)["epoch"] == 0
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.ckpt", "last.prev.ckpt"]


def test_a_checkpoint_too_large_for_the_disk_is_one_line_and_the_previous_one_stays(tmp_path, monkeypatch):
    # the checkpoint writer of training, in this process with a write that fails as a file-size limit makes it
    # fail (a run under a real limit, resumed: the slow test above)
    import torch

    from reid.lit.resume import AtomicCheckpointIO

    run = tmp_path / "run"
    last = run / "checkpoints" / "last.ckpt"
    writer = AtomicCheckpointIO()
    writer.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "epoch": 0}, last)
    previous = last.read_bytes()

    def too_large(fd):
        raise OSError(errno.EFBIG, os.strerror(errno.EFBIG))

    monkeypatch.setattr(os, "fsync", too_large)
    with pytest.raises(DiskFullError) as info:
        writer.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "epoch": 1}, last)
    monkeypatch.undo()
    line = str(info.value)
    assert line.startswith(f"file too large writing {last} (the previous last.ckpt is intact): ") and "\n" not in line
    assert "free space on " in line and line.endswith(
        f"then resume with ckpt_path=last (`python train.py <same overrides> hydra.run.dir={run} ckpt_path=last`)"
    )
    # the epoch-1 checkpoint, whole, and no temporary file beside it
    assert last.read_bytes() == previous and checkpoints.load_checkpoint(last)["epoch"] == 0
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.ckpt", "last.prev.ckpt"]


@pytest.mark.parametrize("error_number", [errno.ENOSPC, errno.EDQUOT, errno.EFBIG])
def test_a_full_disk_or_quota_names_the_file_and_the_device_to_free(tmp_path, monkeypatch, error_number):
    target = atomic_write_text(tmp_path / "metrics.json", "old\n")
    real_fsync = os.fsync

    def full(fd):  # delayed allocation: a full disk may only show when the data is flushed
        raise OSError(error_number, os.strerror(error_number))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(DiskFullError) as info:
        atomic_write_text(target, "new\n", retry="run it again")
    monkeypatch.setattr(os, "fsync", real_fsync)
    message = str(info.value)
    assert message.startswith(f"{FULL_ERRNOS[error_number]} writing {target} (the previous metrics.json is intact): ")
    assert (
        f"free space {'within your quota ' if error_number == errno.EDQUOT else ''}on {device_of(tmp_path)}" in message
    )
    assert message.endswith("then run it again") and "\n" not in message
    assert isinstance(info.value, OSError) and info.value.errno == error_number
    assert target.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_evaluate_on_a_full_disk_is_one_line_and_keeps_the_previous_outputs(make_cfg, tmp_path, monkeypatch, capsys):
    import torch

    from reid import tasks as runner
    from reid.evaluation import FeatureSet

    torch.manual_seed(0)
    pids = torch.tensor([1, 2, 1, 2, 3])
    features = FeatureSet(
        features={"all": torch.randn(5, 8)},
        pids=pids,
        camids=torch.tensor([0, 0, 1, 1, 1]),
        is_query=torch.tensor([True, True, False, False, False]),
        paths=[f"img{i}.jpg" for i in range(5)],
    )
    saved = features.save(tmp_path / "features.pt")
    cfg = make_cfg(f"features_path={saved}", "eval.pictures.enabled=false", config_name="evaluate", tiny=False)
    out = Path(cfg.paths.output_dir)
    write_metrics({"rank1": 0.5}, out)

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(SystemExit) as exit_info:
        runner.run_cli(runner.evaluate, cfg)
    monkeypatch.undo()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    metrics = out / "metrics.json"
    assert err.startswith(
        f"error: no space left writing {metrics} (the previous metrics.json is intact): free space on "
    )
    assert err.rstrip().endswith("then run evaluate.py again (`python evaluate.py <same overrides>`)")
    assert json.loads(metrics.read_text()) == {"rank1": 0.5}
    assert not list(out.glob(".*.partial"))
