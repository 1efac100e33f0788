"""W&B asked to log online: no API key is one error line; a server out of reach means an offline run, not a hang."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, TINY_OVERRIDES

from reid.tasks.common import WANDB_CONNECT_TIMEOUT, _unreachable

# nothing listens on the discard port of this machine: W&B's server "out of reach", network or not
NO_SERVER = "http://127.0.0.1:9"


def _train(tmp_path: Path, data_dir: Path, **env: str) -> subprocess.CompletedProcess:
    """``python train.py`` with logger=wandb, WANDB_MODE=online and a home without W&B credentials."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    environment = {
        **{k: v for k, v in os.environ.items() if k != "WANDB_API_KEY"},
        "HOME": str(home),
        "NETRC": str(home / ".netrc"),
        "WANDB_CONFIG_DIR": str(home / ".config" / "wandb"),
        "WANDB_MODE": "online",
        "WANDB_BASE_URL": NO_SERVER,
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
        **env,
    }
    overrides = [o for o in TINY_OVERRIDES if not o.startswith("logger=")]
    command = [
        sys.executable,
        str(ROOT / "train.py"),
        *overrides,
        "logger=wandb",
        "trainer.max_epochs=1",
        f"paths.data_dir={data_dir}",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    return subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=240)


@pytest.mark.slow
def test_online_without_an_api_key_is_one_line_naming_the_login_and_the_offline_choices(tmp_path, data_dir):
    result = _train(tmp_path, data_dir)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "UsageError" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    line = errors[0]
    assert line.startswith("error: WANDB_MODE=online: ") and "no W&B API key is configured" in line
    for fix in ("`wandb login`", "WANDB_API_KEY", "WANDB_MODE=offline", "logger=csv"):
        assert fix in line


@pytest.mark.slow
def test_a_key_but_no_server_logs_offline_after_one_warning_and_the_run_finishes(tmp_path, data_dir):
    started = time.monotonic()
    result = _train(tmp_path, data_dir, WANDB_API_KEY="0123456789abcdef0123456789abcdef01234567")
    elapsed = time.monotonic() - started
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    run = tmp_path / "run"
    warnings = [line for line in output.splitlines() if "cannot be reached" in line]
    assert len(warnings) == 1, output[-3000:]
    assert NO_SERVER in warnings[0] and f"wandb sync {run / 'wandb' / 'offline-run-*'}" in warnings[0]
    assert (run / "metrics.json").is_file()
    offline_runs = list((run / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 1 and list(offline_runs[0].glob("*.wandb")), "nothing for `wandb sync` to upload"
    assert elapsed < 120  # wandb.init alone would have waited 90 s for the server before failing


def test_the_online_check_refuses_a_missing_key_and_falls_back_offline_without_a_server(tmp_path, monkeypatch, caplog):
    # what train.py checks before it makes the W&B logger, in this process with wandb's own key and server
    # lookups stubbed out (the command itself, with a home without credentials: the two slow tests above)
    from omegaconf import OmegaConf

    from reid.tasks import common

    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setattr(common, "_wandb_base_url", lambda: NO_SERVER)
    monkeypatch.setattr(common, "_has_wandb_credentials", lambda base_url, setting: False)
    conf = OmegaConf.create({"_target_": "pytorch_lightning.loggers.wandb.WandbLogger", "save_dir": str(tmp_path)})
    with pytest.raises(common.WandbLoginError) as info:
        common.check_wandb_online(conf)
    line = str(info.value)
    assert line.startswith("WANDB_MODE=online: ") and "no W&B API key is configured" in line and "\n" not in line
    for fix in ("`wandb login`", "WANDB_API_KEY", "WANDB_MODE=offline", "logger=csv"):
        assert fix in line

    monkeypatch.setattr(common, "_has_wandb_credentials", lambda base_url, setting: True)
    with caplog.at_level("WARNING"):
        checked = common.check_wandb_online(conf)  # nothing listens on NO_SERVER's port
    assert checked.mode == "offline" and os.environ["WANDB_MODE"] == "offline"
    warnings = [r.getMessage() for r in caplog.records if "cannot be reached" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert NO_SERVER in warnings[0] and f"wandb sync {tmp_path / 'wandb' / 'offline-run-*'}" in warnings[0]


def test_the_reachability_check_is_bounded_even_where_packets_go_unanswered():
    started = time.monotonic()
    # 192.0.2.0/24 is reserved for documentation (RFC 5737): never routed, so at best no answer
    problem = _unreachable("https://192.0.2.1", timeout=0.5)
    assert problem is not None and "192.0.2.1:443" in problem
    assert time.monotonic() - started < 0.5 + 1.0
    assert WANDB_CONNECT_TIMEOUT <= 10
