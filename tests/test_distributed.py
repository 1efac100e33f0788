"""Scale-out, as users run it: DDP on 2 CPU processes, multiruns of DDP jobs, λ/β sweeps, Optuna, SLURM config.

Every run is a `python train.py ...` subprocess (Lightning's DDP launcher re-executes the
command line, which must not happen inside pytest).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import CONF_DIR, ROOT, TINY_OVERRIDES

from reid.launch import child_argv

TINY = [o for o in TINY_OVERRIDES if not o.startswith(("callbacks=", "logger="))] + [
    "callbacks=default",
    "~callbacks.progress_bar",
    "~callbacks.dashboard",
    "logger=none",
    "trainer.max_epochs=1",
]
DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]


def _run(script: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _job_dirs(sweep_dir: Path) -> list[Path]:
    return sorted(p for p in sweep_dir.iterdir() if p.is_dir())


def _rank_lines(log_file: Path) -> list[dict]:
    """The 'hyper-parameters of this process' lines each rank logs."""
    lines = re.findall(r"hyper-parameters of this process: (\{.*\})", log_file.read_text())
    return [yaml.safe_load(line.replace("'", '"').replace("None", "null")) for line in lines]


def test_child_argv_keeps_config_flags_and_the_jobs_own_values_only():
    argv = ["train.py", "-m", "--config-name", "train", "model.lambda_intra=0.1,0.5", "-cp=conf"]
    assert child_argv(argv, ["model.lambda_intra=0.5", "data.beta=0.1"]) == [
        "train.py",
        "--config-name",
        "train",
        "-cp=conf",
        "model.lambda_intra=0.5",
        "data.beta=0.1",
        "hydra.mode=RUN",
    ]


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_scores_like_a_single_process(tmp_path, data_dir):
    run_dir = tmp_path / "ddp"
    trained = _run("train.py", *TINY, *DDP, f"paths.data_dir={data_dir}", f"hydra.run.dir={run_dir}")
    assert trained.returncode == 0, trained.stderr[-3000:]
    ranks = _rank_lines(run_dir / "train.log")
    assert sorted(r["rank"] for r in ranks) == [0, 1]
    ddp_metrics = json.loads((run_dir / "metrics.json").read_text())

    # the same weights scored by one process, without any distributed sampler or gathering
    scored = _run(
        "evaluate.py",
        *[o for o in TINY_OVERRIDES if not o.startswith(("callbacks=", "model.", "trainer.enable_model"))],
        f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}",
        f"paths.data_dir={data_dir}",
        f"hydra.run.dir={tmp_path / 'eval'}",
    )
    assert scored.returncode == 0, scored.stderr[-3000:]
    single = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    for key in ("rank1", "rank5", "mAP", "mINP"):
        assert single[key] == pytest.approx(ddp_metrics[key], abs=1e-6), key


@pytest.mark.slow
def test_multirun_of_ddp_jobs_gives_one_directory_and_one_configuration_per_job(tmp_path, data_dir):
    sweep_dir = tmp_path / "sweep"
    result = _run(
        "train.py",
        "-m",
        *TINY,
        *DDP,
        "model.lambda_intra=0.3,0.7",
        f"paths.data_dir={data_dir}",
        f"hydra.sweep.dir={sweep_dir}",
        f"paths.log_dir={tmp_path / 'logs'}",
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = _job_dirs(sweep_dir)
    assert [j.name for j in jobs] == ["0", "1"]  # no directories from re-run sweeps
    assert not (tmp_path / "logs").exists()
    seen = []
    for job in jobs:
        assert (job / "metrics.json").is_file()
        ranks = _rank_lines(job / "train.log")
        assert sorted(r["rank"] for r in ranks) == [0, 1], ranks
        values = {(r["lambda_intra"], r["beta"], r["output_dir"]) for r in ranks}
        assert len(values) == 1, values  # every rank trained the same configuration, in this job's directory
        lam, _, out = values.pop()
        assert Path(out) == job
        seen.append(lam)
    assert seen == [0.3, 0.7]


@pytest.mark.slow
def test_lambda_beta_sweep_in_parallel_builds_the_table(tmp_path, data_dir):
    sweep_dir = tmp_path / "sweep"
    result = _run(
        "train.py",
        "-m",
        *TINY,
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "data.num_workers=1",  # loader workers inside loky's workers (they spawn by default)
        "model.lambda_intra=0.2,0.8",
        "data.beta=0.05,0.15",
        f"paths.data_dir={data_dir}",
        f"hydra.sweep.dir={sweep_dir}",
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = _job_dirs(sweep_dir)
    assert len(jobs) == 4 and all((j / "metrics.json").is_file() for j in jobs)
    report = subprocess.run(
        [sys.executable, "-m", "reid.tools.report", str(sweep_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert report.returncode == 0, report.stderr[-3000:]
    markdown = (sweep_dir / "report.md").read_text()
    for value in ("0.2", "0.8", "0.05", "0.15"):
        assert value in markdown
    assert list(sweep_dir.glob("*.png")) or list(sweep_dir.glob("**/*.png"))


@pytest.mark.slow
def test_optuna_sweep_runs_two_trials_and_reports_the_best(tmp_path, data_dir):
    sweep_dir = tmp_path / "optuna"
    result = _run(
        "train.py",
        *TINY,
        "hparams_search=lambda_beta",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.sampler.n_startup_trials=2",
        f"paths.data_dir={data_dir}",
        f"hydra.sweep.dir={sweep_dir}",
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = _job_dirs(sweep_dir)
    assert len(jobs) == 2 and all((j / "metrics.json").is_file() for j in jobs)
    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert set(best["best_params"]) == {"model.lambda_intra", "data.beta"}
    maps = [json.loads((j / "metrics.json").read_text())["mAP"] for j in jobs]
    assert best["best_value"] == pytest.approx(max(maps))


def _shown_config(*args: str, command_line: bool) -> str:
    """What `python train.py <args> --cfg hydra|job` prints: run as a command, or composed in this process.

    In this process: the command-line check train.py makes first, then Hydra's composition with its
    own node, of which ``--cfg hydra`` shows only ``hydra`` and ``--cfg job`` everything else.
    """
    if command_line:
        result = _run("train.py", *args, timeout=120)
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from reid.cli import check_command_line

    *overrides, flag, part = args
    assert flag == "--cfg" and part in ("hydra", "job")
    check_command_line("train", list(args))  # also registers the typed schemas that the configs extend
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    keys = ["hydra"] if part == "hydra" else [key for key in cfg if key != "hydra"]
    return OmegaConf.to_yaml(OmegaConf.masked_copy(cfg, keys))


# the composition in this process in the fast loop; a new Python process per command (5 s each) in CI
VIA = ["in_process", pytest.param("command_line", marks=pytest.mark.slow)]


@pytest.mark.parametrize("via", VIA)
@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["hparams_search=lambda_beta"], ["OptunaSweeper", "TPESampler", "model.lambda_intra: interval(0.0, 1.0)"]),
        (["hydra/launcher=slurm"], ["SlurmLauncher", "gpus_per_node: 4", "tasks_per_node: 4"]),
        (["hydra/launcher=joblib"], ["JoblibLauncher"]),
    ],
)
def test_sweep_configs_compose(overrides, expected, via):
    shown = _shown_config(*overrides, "--cfg", "hydra", command_line=via == "command_line")
    for text in expected:
        assert text in shown, text


@pytest.mark.parametrize("via", VIA)
def test_ddp_trainer_config_composes_for_many_nodes(via):
    shown = _shown_config(
        "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2", "--cfg", "job", command_line=via == "command_line"
    )
    trainer = yaml.safe_load(shown)["trainer"]
    assert trainer["strategy"] == "ddp" and trainer["devices"] == 4 and trainer["num_nodes"] == 2
