"""Crash-safe resume: a resumed run replays the uninterrupted one (also after SIGKILL); atomic, safe checkpoints."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from conftest import ROOT, TINY_OVERRIDES, flat_metrics
from hydra.utils import instantiate
from pytorch_lightning.callbacks import ModelCheckpoint
from resume_helpers import Crash, CrashAt, StepRecorder, read_steps

import reid.tasks as runner
from reid import checkpoints
from reid.lit.resume import (
    AtomicCheckpointIO,
    CheckpointCorruptError,
    RandomStateCheckpoint,
    add_wandb_resume,
    checkpoint_problem,
    find_resume_checkpoint,
    resolve_ckpt_path,
    wandb_resume_kwargs,
)

# Every random augmentation on: each sample's augmentation is seeded from (sampler seed, epoch,
# position), so a resumed epoch must replay it exactly too.
AUGMENTATION = [
    "data.augment.hflip=0.5",
    "data.augment.pad_crop=0.5",
    "data.augment.random_erasing=0.5",
    "data.augment.color_jitter=0.5",
]
# 24 training images in batches of 4: 6 steps per epoch
# (lr 0.01: at the demo recipe's 0.05, batches of 4 with this much augmentation diverge)
RESUME_OVERRIDES = [
    *AUGMENTATION,
    "data.batch_size=4",
    "model.optimizer.lr=0.01",
    "trainer.deterministic=true",
    "trainer.max_epochs=2",
]
STEPS_PER_EPOCH = 6


def _fit(cfg, callbacks, ckpt_path=None):
    """Fits like reid.tasks.train (same plugins and RNG callback), returning the trained module."""
    pl.seed_everything(int(cfg.seed), workers=True)
    datamodule = runner.build_datamodule(cfg)
    model = runner.build_model(cfg, datamodule.num_classes, datamodule.dataset.protocol)
    trainer = instantiate(
        cfg.trainer,
        callbacks=[*callbacks, RandomStateCheckpoint()],
        logger=False,
        plugins=[AtomicCheckpointIO()],
    )
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    return model


def _last_checkpoint(folder: Path, every: int | str) -> ModelCheckpoint:
    """last.ckpt every ``every`` steps, or at each epoch end when ``every="epoch"`` (as conf/callbacks does)."""
    if every == "epoch":
        when = {"every_n_epochs": 1, "save_on_train_epoch_end": True}
    else:
        when = {"every_n_train_steps": every}
    return ModelCheckpoint(
        dirpath=folder, filename="last", monitor=None, save_top_k=1, enable_version_counter=False, **when
    )


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), rtol=1e-6, atol=1e-7), key


# ---------------------------------------------------------------------------- in-process


@pytest.fixture(scope="module")
def uninterrupted_fits() -> dict:
    """``(num_workers, pipeline) -> (steps, weights)`` of the uninterrupted fit, made by the first test that needs it:
    the cases differ in where they crash and resume, not in the run they must replay."""
    return {}


@pytest.mark.parametrize(
    ("num_workers", "every", "crash_at", "resume_step", "pipeline"),
    [
        (0, 4, 10, 8, "cpu"),  # resumes mid-epoch 1 (batch 3 of 6); steps 9, 10 are lost and replayed
        # the same with the crops cut and augmented in the training process (data.pipeline=device)
        (0, 4, 10, 8, "device"),
        # the same with workers prefetching batches ahead of training (CI; the fast loop has the loader's own
        # test with workers, test_samplers.py::test_loader_state_resumes_after_the_batches_the_consumer_processed)
        pytest.param(2, 4, 10, 8, "cpu", marks=pytest.mark.slow),
        pytest.param(2, 4, 10, 8, "device", marks=pytest.mark.slow),
        # the checkpoint of epoch 0's last batch: resumes at the epoch boundary (CI; the fast loop resumes there
        # from the epoch-end checkpoint, the next case, and from a step checkpoint mid-epoch, the first)
        pytest.param(0, 6, 8, 6, "cpu", marks=pytest.mark.slow),
        (0, "epoch", 8, 6, "cpu"),  # the checkpoint written at the end of epoch 0
    ],
)
def test_resume_replays_the_uninterrupted_run(
    make_cfg, tmp_path, uninterrupted_fits, num_workers, every, crash_at, resume_step, pipeline
):
    cfg = make_cfg(*RESUME_OVERRIDES, f"data.num_workers={num_workers}", f"data.pipeline={pipeline}")

    if (num_workers, pipeline) not in uninterrupted_fits:
        straight = StepRecorder()
        reference = _fit(cfg, [straight])
        weights = {key: value.detach().clone() for key, value in reference.state_dict().items()}
        uninterrupted_fits[num_workers, pipeline] = (straight.steps, weights)
    straight_steps, reference_weights = uninterrupted_fits[num_workers, pipeline]
    assert len(straight_steps) == 2 * STEPS_PER_EPOCH

    crashed = StepRecorder()
    with pytest.raises(Crash):
        _fit(cfg, [crashed, _last_checkpoint(tmp_path, every), CrashAt(crash_at)])
    checkpoint = tmp_path / "last.ckpt"
    saved = torch.load(checkpoint, weights_only=True)
    assert saved["global_step"] == resume_step
    loader_state = saved["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]
    # where training goes on: the batches processed (not what the loader prefetched); after an
    # epoch's last batch, the start of the next epoch
    assert (loader_state["epoch"], loader_state["batches_done"]) == divmod(resume_step, STEPS_PER_EPOCH)
    assert saved["ReIDDataModule"]["train_loader"] == loader_state

    resumed = StepRecorder()
    model = _fit(cfg, [resumed, _last_checkpoint(tmp_path, every)], ckpt_path=str(checkpoint))
    replay = [s for s in crashed.steps if s[0] <= resume_step] + resumed.steps
    assert replay == straight_steps  # same batches, same samples, same order
    _assert_same_weights(model.state_dict(), reference_weights)


# ---------------------------------------------------------------------------- SIGKILL, train.py


# the shipped callbacks (epoch-end last.ckpt, step last.ckpt, best by mAP, dashboard, guard) and
# loader workers, validation every epoch, step checkpoints every 4 of the 6 steps of an epoch
SHIPPED_EPOCHS = 3
SHIPPED_OVERRIDES = [
    *RESUME_OVERRIDES,
    f"trainer.max_epochs={SHIPPED_EPOCHS}",
    "data.num_workers=2",
    "logger=csv",
    "trainer.check_val_every_n_epoch=1",
    "callbacks.step_checkpoint.every_n_train_steps=4",
]


def _train_command(run_dir: Path, data_dir: Path, record: Path, *extra: str) -> list[str]:
    common = [o for o in TINY_OVERRIDES if not o.startswith(("callbacks=", "logger=", "data.num_workers="))]
    return [
        sys.executable,
        str(ROOT / "train.py"),
        *common,
        *SHIPPED_OVERRIDES,
        "seed=7",
        "+callbacks.recorder._target_=resume_helpers.StepRecorder",
        f"+callbacks.recorder.path={record}",
        f"paths.data_dir={data_dir}",
        f"hydra.run.dir={run_dir}",
        *extra,
    ]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}", "OMP_NUM_THREADS": "1"}


def _run(command: list[str]) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def uninterrupted_runs(tmp_path_factory, data_dir) -> Callable[[str], Path]:
    """The reference of each pipeline: the same command, never interrupted (its folder holds steps.jsonl)."""
    made: dict[str, Path] = {}

    def run(pipeline: str) -> Path:
        if pipeline not in made:
            run_dir = tmp_path_factory.mktemp(f"straight_{pipeline}")
            _run(_train_command(run_dir / "run", data_dir, run_dir / "steps.jsonl", f"data.pipeline={pipeline}"))
            made[pipeline] = run_dir
        return made[pipeline]

    return run


# (kill point, where last.ckpt then stands: global step, the epoch it belongs to, batches done in it)
# SIGKILL ends the process at once; SIGTERM (what schedulers send first) lets it finish the batch,
# save last.ckpt there and exit with status 143
KILL_POINTS = {
    # just after the epoch-end checkpoint of epoch 0 (step 4's checkpoint came before it)
    "after_epoch_end_checkpoint": (["+callbacks.kill.point=train", "+callbacks.kill.step=6"], 6, 0, 6),
    # in epoch 1, between the step checkpoints of steps 8 and 12
    "between_step_checkpoints": (["+callbacks.kill.point=train", "+callbacks.kill.step=10"], 8, 1, 2),
    # in epoch 1's validation: after the step checkpoint of the epoch's last batch, before the epoch-end one
    "during_validation": (["+callbacks.kill.point=validation", "+callbacks.kill.epoch=1"], 12, 1, 6),
    # SIGTERM before step 9's batch: that batch is trained, then last.ckpt is written and the run stops
    "sigterm_mid_epoch": (
        ["+callbacks.kill.point=train", "+callbacks.kill.step=8", "+callbacks.kill.signal_name=TERM"],
        9,
        1,
        3,
    ),
    # SIGTERM during the validation after training: last.ckpt is the end of training, no metrics.json
    "sigterm_final_validation": (
        ["+callbacks.kill.point=final_validation", "+callbacks.kill.signal_name=TERM"],
        18,
        2,
        6,
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("point", "pipeline"),
    [(point, "cpu") for point in KILL_POINTS]
    # the device path (crops cut in the training process from the shipped draws): mid-epoch and in validation
    + [("between_step_checkpoints", "device"), ("during_validation", "device")],
)
def test_sigkilled_run_resumed_with_ckpt_path_last_ends_like_an_uninterrupted_run(
    tmp_path, data_dir, uninterrupted_runs, point, pipeline
):
    kill, step, epoch, batches_done = KILL_POINTS[point]
    killed_dir = tmp_path / "killed"
    uninterrupted_run = uninterrupted_runs(pipeline)
    victim = subprocess.run(
        _train_command(
            killed_dir,
            data_dir,
            tmp_path / "killed.jsonl",
            "+callbacks.kill._target_=resume_helpers.KillAt",
            f"data.pipeline={pipeline}",
            *kill,
        ),
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    if "sigterm" in point:
        assert victim.returncode == 143, victim.stderr[-3000:]
        assert victim.stderr.strip().splitlines()[-1].startswith("error: terminated by SIGTERM during "), victim.stderr
        assert "terminated by SIGTERM" in (killed_dir / "train.log").read_text()
    else:
        assert victim.returncode == -signal.SIGKILL, victim.stderr[-3000:]
    saved = torch.load(killed_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == step, "the kill did not land where the test means it to"
    position = saved["ReIDDataModule"]["train_loader"]
    if batches_done == STEPS_PER_EPOCH:  # the epoch is over: training goes on with the next one, from its start
        assert (position["epoch"], position["batches_done"]) == (epoch + 1, 0)
    else:
        assert (position["epoch"], position["batches_done"]) == (epoch, batches_done)
    assert not (killed_dir / "metrics.json").exists()

    # the test's own callbacks (the killer, the step record's file) differ: said to be intended
    _run(
        _train_command(
            killed_dir,
            data_dir,
            tmp_path / "resumed.jsonl",
            "ckpt_path=last",
            "resume_with_changes=true",
            f"data.pipeline={pipeline}",
        )
    )

    # steps trained up to the checkpoint, then the resumed run's: the uninterrupted run's steps
    straight_steps = read_steps(uninterrupted_run / "steps.jsonl")
    replay = [s for s in read_steps(tmp_path / "killed.jsonl") if s[0] <= step]
    replay += read_steps(tmp_path / "resumed.jsonl")
    assert len(straight_steps) == SHIPPED_EPOCHS * STEPS_PER_EPOCH
    assert replay == straight_steps

    straight_dir = uninterrupted_run / "run"
    expected = json.loads((straight_dir / "metrics.json").read_text())
    assert flat_metrics(json.loads((killed_dir / "metrics.json").read_text())) == pytest.approx(
        flat_metrics(expected), abs=1e-6, nan_ok=True
    )
    final = checkpoints.load_checkpoint(killed_dir / "checkpoints" / "last.ckpt")
    reference_weights = checkpoints.load_checkpoint(straight_dir / "checkpoints" / "last.ckpt")["state_dict"]
    _assert_same_weights(final["state_dict"], reference_weights)
    assert final["global_step"] == SHIPPED_EPOCHS * STEPS_PER_EPOCH


# ---------------------------------------------------------------------------- determinism


# with loader workers in CI: the fast loop replays augmented, seeded runs without workers here and above
@pytest.mark.parametrize("num_workers", [0, pytest.param(2, marks=pytest.mark.slow)])
def test_two_seeded_runs_give_identical_metrics_and_another_seed_does_not(make_cfg, num_workers):
    # the augmentation of the synthetic recipe stays on; it is seeded per sample by the sampler
    def run(seed: int) -> dict[str, float]:
        cfg = make_cfg(
            f"seed={seed}",
            "trainer.deterministic=true",
            "trainer.max_epochs=1",
            f"data.num_workers={num_workers}",
            *AUGMENTATION,
        )
        return runner.train(cfg)

    first, second = run(5), run(5)
    assert first == second
    assert run(6) != first


# ---------------------------------------------------------------------------- unsafe checkpoints


class _CodePayload:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_carrying_code_is_refused_and_the_code_never_runs(make_cfg, tmp_path, capsys):
    marker = tmp_path / "payload_ran"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"num_classes": 6}, "extra": _CodePayload(marker)}, evil)

    with pytest.raises(
        checkpoints.CheckpointLoadError, match=r"refusing to load .*evil\.ckpt: it is not a plain weights"
    ):
        checkpoints.load_checkpoint(evil)
    with pytest.raises(checkpoints.CheckpointLoadError, match="refusing to load"):
        AtomicCheckpointIO().load_checkpoint(evil, weights_only=False)  # what resuming a fit goes through
    # train.py ckpt_path=<evil>: one error line, exit status 2
    with pytest.raises(SystemExit) as exit_info:
        runner.run_cli(runner.train, make_cfg(f"ckpt_path={evil}", "trainer.max_epochs=1"))
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith(f"error: refusing to load {evil}")
    assert not marker.exists()


# ---------------------------------------------------------------------------- atomic writes


def test_a_write_killed_halfway_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    target = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "global_step": 1}, target)

    def dies_halfway(obj, handle, *args, **kwargs):
        handle.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt  # stands for the process dying while writing

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "global_step": 2}, target)
    monkeypatch.undo()
    assert io.load_checkpoint(target)["global_step"] == 1
    # no partial file left behind; the replaced checkpoint is kept as the fallback
    assert sorted(p.name for p in target.parent.iterdir()) == ["last.ckpt", "last.prev.ckpt"]
    assert find_resume_checkpoint(tmp_path) == target


def test_find_resume_checkpoint_skips_truncated_files(tmp_path):
    folder = tmp_path / "checkpoints"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"global_step": 1}, folder / "last-v1.ckpt")
    time.sleep(0.01)
    data = (folder / "last-v1.ckpt").read_bytes()
    (folder / "last.ckpt").write_bytes(data[: len(data) // 2])  # newer, but cut off by a crash
    assert find_resume_checkpoint(tmp_path) == folder / "last-v1.ckpt"
    (folder / "last-v1.ckpt").unlink()
    with pytest.raises(CheckpointCorruptError, match=r"no intact checkpoint .*last.ckpt is truncated"):
        find_resume_checkpoint(tmp_path)
    assert find_resume_checkpoint(tmp_path / "nowhere") is None


def _flip_bytes_mid_file(path: Path, size: int = 4096) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + size] = bytes(b ^ 0xFF for b in data[middle : middle + size])
    path.write_bytes(bytes(data))


def test_a_checkpoint_corrupted_inside_is_refused_and_resume_falls_back_to_the_previous_one(tmp_path, capsys):
    io = AtomicCheckpointIO()
    target = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.arange(20000.0)}, "global_step": 1}, target)
    time.sleep(0.01)
    io.save_checkpoint({"state_dict": {"w": torch.arange(20000.0) + 1}, "global_step": 2}, target)
    _flip_bytes_mid_file(target)  # 4 KiB changed in the middle: the zip directory is still whole
    problem = checkpoint_problem(target)
    assert problem is not None and problem.startswith("corrupt (CRC mismatch in ")
    with pytest.raises(checkpoints.CheckpointLoadError, match=r"last.ckpt is corrupt \(CRC mismatch"):
        checkpoints.load_checkpoint(target)
    # resume takes the checkpoint that last.ckpt replaced
    assert find_resume_checkpoint(tmp_path) == tmp_path / "checkpoints" / "last.prev.ckpt"
    assert checkpoints.load_checkpoint(tmp_path)["global_step"] == 1  # a run folder works as ckpt_path too
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(target.read_bytes()[:5000])
    with pytest.raises(checkpoints.CheckpointLoadError, match=r"truncated.ckpt is truncated or not a zip archive"):
        checkpoints.load_checkpoint(truncated)  # named as truncated, not as untrusted
    _flip_bytes_mid_file(tmp_path / "checkpoints" / "last.prev.ckpt")
    with pytest.raises(CheckpointCorruptError, match=r"last.ckpt is corrupt \(CRC .*; last.prev.ckpt is corrupt \(CRC"):
        resolve_ckpt_path("last", tmp_path)


# ---------------------------------------------------------------------------- ckpt_path values


def test_resolve_ckpt_path_understands_last_auto_directories_and_files(tmp_path):
    run_dir = tmp_path / "run"
    assert resolve_ckpt_path(None, run_dir) is None
    assert resolve_ckpt_path("auto", run_dir) is None  # nothing to resume: start afresh
    with pytest.raises(
        FileNotFoundError,
        match=r"ckpt_path=last: no checkpoints/last.ckpt in the run directory .*run; "
        r"resume a run with `python train.py hydra.run.dir=<that run's directory> ckpt_path=last`",
    ):
        resolve_ckpt_path("last", run_dir)
    AtomicCheckpointIO().save_checkpoint({"global_step": 3}, run_dir / "checkpoints" / "last.ckpt")
    expected = str(run_dir / "checkpoints" / "last.ckpt")
    assert resolve_ckpt_path("last", run_dir) == expected
    assert resolve_ckpt_path("auto", run_dir) == expected
    assert resolve_ckpt_path(str(run_dir), tmp_path / "other") == expected  # a run directory
    assert resolve_ckpt_path(expected, tmp_path / "other") == expected
    with pytest.raises(FileNotFoundError, match=r"ckpt_path=.*missing.ckpt: no such checkpoint"):
        resolve_ckpt_path(str(tmp_path / "missing.ckpt"), run_dir)


def test_ckpt_path_last_without_a_checkpoint_is_a_one_line_error(make_cfg, capsys):
    with pytest.raises(SystemExit) as exit_info:
        runner.run_cli(runner.train, make_cfg("ckpt_path=last"))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ckpt_path=last: no checkpoints/last.ckpt")


# ---------------------------------------------------------------------------- W&B run id


def test_wandb_run_id_is_stored_on_a_fresh_start_and_reused_on_resume(tmp_path):
    fresh = wandb_resume_kwargs(tmp_path, resuming=False, new_id=lambda: "abc12345")
    assert fresh == {"id": "abc12345", "resume": "allow"}
    assert (tmp_path / "wandb_run_id").read_text().strip() == "abc12345"
    assert wandb_resume_kwargs(tmp_path, resuming=True, new_id=lambda: "zzz") == {"id": "abc12345", "resume": "allow"}
    # starting afresh in the same directory is a new W&B run
    assert wandb_resume_kwargs(tmp_path, resuming=False, new_id=lambda: "new00000")["id"] == "new00000"
    assert wandb_resume_kwargs(tmp_path / "old_run", resuming=True)["id"]  # no stored id: a new one


def test_add_wandb_resume_sets_the_id_on_wandb_loggers_only(tmp_path):
    from omegaconf import OmegaConf

    group = OmegaConf.create(
        {
            "wandb": {"_target_": "pytorch_lightning.loggers.wandb.WandbLogger", "project": "p"},
            "csv": {"_target_": "pytorch_lightning.loggers.csv_logs.CSVLogger", "save_dir": "."},
        }
    )
    add_wandb_resume(group, tmp_path, resuming=False)
    stored = (tmp_path / "wandb_run_id").read_text().strip()
    assert group.wandb.id == stored and group.wandb.resume == "allow" and "id" not in group.csv
    group.wandb.id = "mine"
    add_wandb_resume(group, tmp_path, resuming=True)
    assert group.wandb.id == "mine"  # an id the user set wins
