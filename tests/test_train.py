"""End-to-end: Hydra composition, a fast_dev_run of every model, train -> evaluate round trip, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import ROOT, TINY_OVERRIDES, flat_metrics
from omegaconf import OmegaConf

from reid.tasks import train
from reid.variants import model_names

MODELS = model_names()  # the files of conf/model/


@pytest.mark.parametrize("model", MODELS)
def test_each_model_config_runs_one_fast_dev_step(make_cfg, model):
    cfg = make_cfg(f"model={model}", "trainer.fast_dev_run=true")
    metrics = train(cfg)
    assert set(metrics) >= {"rank1", "rank5", "rank10", "rank20", "mAP"}
    assert all(0.0 <= metrics[k] <= 1.0 for k in ("rank1", "mAP"))
    written = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert flat_metrics(written) == pytest.approx(flat_metrics(metrics), nan_ok=True)


def test_model_configs_compose_to_the_intended_options(make_cfg):
    expected = {
        "baseline": ("strips", False, "concat"),
        "aligned": ("pose", False, "concat"),
        "intra": ("pose", True, "concat"),
        "inter": ("pose", False, "inter"),
        "intra_inter": ("pose", True, "inter"),
        "intra_fc": ("pose", True, "fc"),
    }
    for model, (regions, intra, fusion) in expected.items():
        cfg = make_cfg(f"model={model}")
        assert (cfg.model.regions, cfg.model.net.intra_attention, cfg.model.net.fusion) == (regions, intra, fusion)
        assert cfg.data.regions == regions  # the data module feeds what the model asks for
    assert make_cfg(tiny=False).model.net.fusion == "inter"  # intra_inter is the default model


def _run(script: str, *overrides: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.run(
        [sys.executable, str(ROOT / script), *overrides],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_train_then_evaluate_reproduces_final_metrics(tmp_path, data_dir):
    run_dir = tmp_path / "train"
    common = [o for o in TINY_OVERRIDES if not o.startswith(("callbacks=", "logger="))]
    train_run = _run(
        "train.py",
        *common,
        "model=baseline",
        "data.beta=0.2",
        "trainer.max_epochs=2",
        "trainer.check_val_every_n_epoch=1",
        "callbacks=default",
        "~callbacks.progress_bar",
        "logger=csv",
        f"paths.data_dir={data_dir}",
        f"hydra.run.dir={run_dir}",
    )
    assert train_run.returncode == 0, train_run.stderr[-3000:]
    # Hydra ran the run-folder guard (test_rundir.py checks it in this process): it locked the folder
    assert (run_dir / ".lock").read_text().startswith("pid ")
    trained = json.loads((run_dir / "metrics.json").read_text())
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    assert checkpoint.is_file()

    # the input sizes and beta are not repeated: they come from the checkpoint
    eval_common = [
        o
        for o in common
        if not o.startswith(("model.", "trainer.enable_model_summary", "data.whole_size", "data.part_size"))
    ]
    eval_dir = tmp_path / "eval"
    # and an explicit setting wins, with a notice in the log and in metrics.json (checked below): the two
    # evaluations run side by side, each a process of its own
    other_dir = tmp_path / "eval_other_beta"
    with ThreadPoolExecutor(max_workers=2) as pool:
        eval_future = pool.submit(
            _run,
            "evaluate.py",
            *eval_common,
            f"ckpt_path={checkpoint}",
            f"paths.data_dir={data_dir}",
            f"hydra.run.dir={eval_dir}",
        )
        other_future = pool.submit(
            _run,
            "evaluate.py",
            *eval_common,
            "data.beta=0.1",
            f"ckpt_path={checkpoint}",
            f"paths.data_dir={data_dir}",
            f"hydra.run.dir={other_dir}",
        )
    eval_run, other = eval_future.result(), other_future.result()
    assert eval_run.returncode == 0, eval_run.stderr[-3000:]
    scored = json.loads((eval_dir / "metrics.json").read_text())
    for key in ("rank1", "rank5", "rank10", "rank20", "mAP"):
        assert scored[key] == pytest.approx(trained[key], abs=1e-6), key
    assert "R1" in eval_run.stdout and "mAP" in eval_run.stdout
    assert "data.beta=0.2 from the checkpoint" in (eval_dir / "evaluate.log").read_text()
    assert "input_differs_from_training" not in scored

    # the explicit setting
    assert other.returncode == 0, other.stderr[-3000:]
    notices = json.loads((other_dir / "metrics.json").read_text())["input_differs_from_training"]
    assert notices == ["data.beta=0.1 as given, but the checkpoint was trained with 0.2"]

    # the evaluations record the input settings they used, and the report states those: its
    # config.yaml keeps the default beta 0.1, the first evaluation used the checkpoint's 0.2
    from reid.tools.report import collect_runs

    assert scored["input_settings"]["beta"] == 0.2 and scored["input_settings"]["whole_size"] == [64, 32]
    (run,) = collect_runs([eval_dir])
    assert run.beta == pytest.approx(0.2) and not run.notes
    (run,) = collect_runs([other_dir])
    assert run.beta == pytest.approx(0.1) and run.notes == [
        f"{other_dir}: scored with beta=0.1 a model trained with beta=0.2"
    ]


# a command line -> the start of the one error line it gets
BAD_COMMAND_LINES = {
    ("data.no_such_key=1",): "error: unknown config key 'data.no_such_key' (fix: remove it or correct it;",
    ("data.batch_size=many",): "error: config key 'data.batch_size': expected int, got 'many' (fix: e.g.",
    ("model=intra_intre",): "error: config group 'model' has no option 'intra_intre' (fix: did you mean "
    "'model=intra_inter'?)",
    # a sweep is checked with its first job
    ("-m", "model=intra,baseline", "data.pose.min_conff=0.2"): "error: unknown config key 'data.pose.min_conff' "
    "(did you mean 'data.pose.min_conf'?)",
}


def test_a_bad_key_value_or_option_is_one_line_from_the_check_before_hydra(capsys):
    # the check train.py makes before Hydra starts, in this process (the command itself: the slow test below)
    from reid.cli import check_command_line

    for overrides, expected in BAD_COMMAND_LINES.items():
        with pytest.raises(SystemExit) as stopped:
            check_command_line("train", overrides)
        assert stopped.value.code == 2
        err = capsys.readouterr().err
        assert err.strip().splitlines() == [err.strip()] and err.startswith(expected), err[-2000:]


@pytest.mark.slow
def test_a_bad_key_value_or_option_fails_at_compose_with_one_line(tmp_path):
    for overrides, expected in BAD_COMMAND_LINES.items():
        result = _run("train.py", *overrides, f"hydra.run.dir={tmp_path}", f"hydra.sweep.dir={tmp_path}")
        assert result.returncode == 2, result.stderr[-2000:]
        assert result.stderr.strip().splitlines() == [result.stderr.strip()] and result.stderr.startswith(expected), (
            result.stderr[-2000:]
        )
    assert not any(tmp_path.iterdir())  # refused before Hydra made any folder


def test_missing_data_dir_is_one_line_naming_the_folder_and_the_fixes(make_cfg, capsys):
    # what train.py runs inside Hydra, in this process (the command itself: the slow test below)
    from omegaconf import open_dict

    from reid.tasks import run_cli

    cfg = make_cfg("data=market", "logger=none", tiny=False)
    missing = Path(cfg.paths.output_dir).parent / "nowhere"
    with open_dict(cfg):
        cfg.paths.data_dir = str(missing)
    with pytest.raises(SystemExit) as stopped:
        run_cli(train, cfg)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    error_lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "Traceback" not in err, err[-2000:]
    line = error_lines[0]
    assert str(missing) in line and "bounding_box_train" in line and "data=synthetic" in line


@pytest.mark.slow
def test_missing_data_dir_fails_at_start_with_one_line(tmp_path):
    missing = tmp_path / "nowhere"
    result = _run(
        "train.py", "data=market", f"paths.data_dir={missing}", "logger=none", f"hydra.run.dir={tmp_path / 'run'}"
    )
    assert result.returncode == 2
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1, result.stderr[-2000:]
    line = error_lines[0]
    assert str(missing) in line and "bounding_box_train" in line and "data=synthetic" in line
    assert "Traceback" not in result.stderr


def test_stored_config_is_plain_and_resolved(make_cfg):
    cfg = make_cfg("model=baseline")
    container = OmegaConf.to_container(cfg, resolve=True)
    assert container["data"]["regions"] == "strips"
    assert container["data"]["root"] == cfg.paths.data_dir  # ${paths.data_dir}, resolved


def test_wandb_logger_runs_offline_by_default(make_cfg):
    cfg = make_cfg("model=baseline", "trainer.fast_dev_run=true", "logger=wandb")
    os.environ.pop("WANDB_MODE", None)
    try:
        train(cfg)
    finally:
        os.environ["WANDB_MODE"] = "offline"
    runs = list((Path(cfg.paths.output_dir) / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, "W&B should write an offline run into the run directory"


def test_bf16_mixed_precision_trains_and_scores(make_cfg):
    cfg = make_cfg("model=intra_inter", "trainer.fast_dev_run=true", "trainer.precision=bf16-mixed")
    metrics = train(cfg)
    assert 0.0 <= metrics["mAP"] <= 1.0 and 0.0 <= metrics["rank1"] <= 1.0


def test_compile_option_compiles_the_training_forward(make_cfg):
    import torch
    from hydra.utils import instantiate

    # eager backend: the torch.compile wiring without a C++ toolchain or minutes of compiling
    cfg = make_cfg("model=baseline", "model.compile=true", "model.compile_options.backend=eager")
    module = instantiate(cfg.model, num_classes=5, _convert_="all")
    plain = instantiate(make_cfg("model=baseline").model, num_classes=5, _convert_="all")
    assert module.compiled_net is not None and plain.compiled_net is None
    # checkpoints keep the plain network's parameter names
    assert list(module.state_dict()) == list(plain.state_dict())
    module.load_state_dict(plain.state_dict())
    whole, parts = torch.randn(2, 3, 64, 32), torch.randn(2, 4, 3, 16, 32)
    with torch.no_grad():
        assert torch.allclose(module.eval()(whole, parts).feature, plain.eval()(whole, parts).feature, atol=1e-5)


def test_a_compiled_run_compiles_one_graph_and_evaluates_eagerly(make_cfg):
    """Two epochs with validation (whose last batch is smaller) compile the training forward once."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    cfg = make_cfg(
        "model=intra_inter",
        "model.compile=true",
        "model.compile_options.backend=eager",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=2",
    )
    metrics = train(cfg)
    assert 0.0 <= metrics["mAP"] <= 1.0
    # one graph, no recompilation: validation under no_grad and its smaller last batch ran the plain network
    assert counters["stats"]["unique_graphs"] == 1
    assert sum(counters["recompiles"].values()) == 0
    torch._dynamo.reset()


def test_a_loader_workers_error_is_reported_as_its_own_last_line():
    from reid.errors import one_line as _last_line

    worker_message = (
        "Caught CorruptImageError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
        '  File "x.py", line 1, in f\nreid.data.io.CorruptImageError: image /d/a.jpg cannot be decoded: delete it'
    )
    assert _last_line(worker_message) == "image /d/a.jpg cannot be decoded: delete it"
    assert _last_line("data set not found:\n  /d/market") == "data set not found: /d/market"


def test_paper_recipes_warn_in_one_line_when_pretraining_is_missing(make_cfg, caplog):
    from reid.tasks import warn_if_pretraining_missing

    with caplog.at_level("WARNING", logger="reid.tasks"):
        assert warn_if_pretraining_missing(make_cfg("experiment=paper_market", tiny=False))
    lines = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(lines) == 1 and lines[0].startswith("warning: this recipe fine-tunes from ImageNet pre-training")
    assert "model.pretrained" in lines[0] and "\n" not in lines[0]
    assert not warn_if_pretraining_missing(make_cfg("experiment=paper_market", "model.pretrained=w.ckpt", tiny=False))
    assert not warn_if_pretraining_missing(make_cfg("experiment=paper_market", "expect_pretrained=false", tiny=False))
    assert not warn_if_pretraining_missing(make_cfg(tiny=False))  # the demo trains from scratch on purpose


def test_load_from_checkpoint_rebuilds_the_module_from_the_checkpoint_alone(make_cfg):
    import torch

    from reid.checkpoints import CheckpointLoadError
    from reid.lit.module import ReIDModule

    cfg = make_cfg(
        "model=intra_inter",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "callbacks=model_checkpoint",
        "final_validation=false",
    )
    train(cfg)
    path = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    module = ReIDModule.load_from_checkpoint(path)
    assert isinstance(module, ReIDModule) and module.net.intra_attention and module.net.fusion_name == "inter"
    stored = torch.load(path, weights_only=True)["state_dict"]
    for key, value in module.state_dict().items():
        assert torch.equal(value, stored[key]), key
    module.eval()
    whole, parts = torch.zeros(2, 3, 64, 32), torch.zeros(2, 4, 3, 16, 32)
    assert module.extract_features(whole, parts).shape == (2, module.net.feature_dim)
    stripped = Path(cfg.paths.output_dir) / "plain.ckpt"
    torch.save({"state_dict": stored}, stripped)
    with pytest.raises(CheckpointLoadError, match="holds no stored model config"):
        ReIDModule.load_from_checkpoint(stripped)


@pytest.mark.slow
def test_a_sweep_with_the_default_folders_runs_every_job(tmp_path, data_dir):
    # the sweep's folder is ${paths.log_dir}/...: resolvable before Hydra sets up a job (no ${hydra:runtime.cwd})
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "train.py"),
            "-m",
            "model=intra,baseline",
            *TINY_OVERRIDES,
            "trainer.fast_dev_run=true",
            f"paths.data_dir={data_dir}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    written = sorted(tmp_path.glob("outputs/train/multiruns/*/*/metrics.json"))
    assert [path.parent.name for path in written] == ["0", "1"]


@pytest.mark.slow
def test_a_batch_larger_than_the_training_set_is_one_error_line_and_writes_no_metrics(tmp_path, data_dir):
    # the tiny set has 6 identities x 4 images = 24 training images: no complete batch of 32
    run_dir = tmp_path / "run"
    result = _run(
        "train.py", *TINY_OVERRIDES, "data.batch_size=32", f"paths.data_dir={data_dir}", f"hydra.run.dir={run_dir}"
    )
    assert result.returncode == 2, result.stderr[-3000:]
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert error_lines[0].startswith("error: data.batch_size=32 is more than the 24 training images")
    assert "lower data.batch_size to at most 24" in error_lines[0]
    assert not (run_dir / "metrics.json").exists()
    assert not list(run_dir.glob("checkpoints/*.ckpt"))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["+trainer.max_steps=0"], "trainer.max_steps=0 trains nothing"),
        (["trainer.limit_train_batches=0.1"], "trainer.limit_train_batches=0.1 keeps no batch of the 3 training"),
        (["data.sampler=identity", "data.batch_size=28"], "data.sampler=identity needs 7 identities per batch"),
        # as train.py reports it in one line: the slow test above
        (["data.batch_size=32"], "data.batch_size=32 is more than the 24 training images"),
    ],
)
def test_settings_that_train_nothing_are_refused_before_fit(make_cfg, overrides, message):
    from reid.errors import ConfigError

    cfg = make_cfg(*overrides)
    with pytest.raises(ConfigError, match=message):
        train(cfg)
    assert not (Path(cfg.paths.output_dir) / "metrics.json").exists()


def test_a_fit_without_a_step_writes_no_metrics_but_a_finished_run_resumes(make_cfg, monkeypatch):
    from omegaconf import open_dict

    from reid.lit.datamodule import CropLoadersMixin
    from reid.tasks.train import NothingTrainedError

    # a finished run resumed trains no further step but keeps those of its checkpoint: still a result
    cfg = make_cfg("trainer.max_epochs=1", "callbacks=model_checkpoint")
    train(cfg)
    output = Path(cfg.paths.output_dir)
    (output / "metrics.json").unlink()
    with open_dict(cfg):
        cfg.ckpt_path = "last"
    assert "mAP" in train(cfg) and (output / "metrics.json").is_file()

    # the check after fit, should a zero-step fit get past the checks before it
    monkeypatch.setattr(CropLoadersMixin, "train_batches_per_epoch", lambda self, num_replicas=1: 1)
    cfg = make_cfg("data.batch_size=32")
    with open_dict(cfg):
        cfg.paths.output_dir = str(output.parent / "zero_steps")
    with pytest.raises(NothingTrainedError, match=r"trainer.fit made 0 optimizer steps: the training loader gave no"):
        train(cfg)
    assert not (output.parent / "zero_steps" / "metrics.json").exists()
