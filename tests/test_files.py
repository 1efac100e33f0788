"""Atomic result files: a failed write (full disk, file-size limit, error, kill) leaves the previous file whole."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from conftest import ROOT
from reid.files import atomic_save_image, atomic_write, atomic_write_json, atomic_write_text
from reid.tasks import write_metrics

# writes a metrics.json of about 20 KB under a 1 KiB file-size limit (what a full disk does to a write)
_BIG_WRITE = """
import resource, sys
sys.path.insert(0, {root!r})
from reid.tasks import write_metrics
resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))
write_metrics({{f"metric_{{i}}": i / 1000 for i in range(1000)}}, {out!r})
"""


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
