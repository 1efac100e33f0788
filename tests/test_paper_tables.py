"""One command per paper table: conf/experiment/table<N>.yaml sweeps what the table varies, over seeds."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import CONF_DIR, ROOT
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser

from reid.conf import compose_configs
from reid.conf.store import register_schemas
from reid.conf.validate import validate_config

SEEDS = ["1", "2", "3"]
# experiment -> (what it sweeps besides the seed, the values)
SWEEPS = {
    "table6": ("model", ["baseline", "aligned", "intra", "inter", "intra_inter"]),
    "table8": ("model.net.decompose", ["true", "false"]),
    "table9": ("model.net.fusion", ["concat", "fc", "inter"]),
    "table10": ("model.lambda_intra", [f"{k / 10:.1f}" for k in range(11)]),
    "table11": ("data.beta", [repr(k / 48) for k in range(7)]),
}


def _hydra_config(*overrides: str):
    """The composed config with Hydra's own node (hydra.sweeper, hydra.sweep), as `train.py -m` sees it."""
    register_schemas()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides), return_hydra_config=True)


def _jobs(*command_line: str) -> list[list[str]]:
    """The overrides of each job of `python train.py -m <command_line>`, as Hydra's basic sweeper makes them."""
    cfg = _hydra_config(*command_line)
    params = [f"{key}={value}" for key, value in (cfg.hydra.sweeper.params or {}).items()]
    overrides = OverridesParser.create().parse_overrides(params + list(command_line))
    (batch,) = BasicSweeper.split_arguments(overrides, None)
    return batch


def test_every_table_experiment_is_tested():
    shipped = sorted(p.stem for p in (Path(CONF_DIR) / "experiment").glob("table*.yaml"))
    assert shipped == sorted(SWEEPS)


# tables 6, 8, 10 and 11 (15, 6, 33 and 21 jobs, 0.2 s of composing each) in CI: the fast loop checks the
# same sweep on table 9, and composes every table's settings in test_the_tables_run_the_papers_networks...
LONG_SWEEPS = {"table6", "table8", "table10", "table11"}


@pytest.mark.parametrize(
    "experiment", [pytest.param(e, marks=pytest.mark.slow) if e in LONG_SWEEPS else e for e in sorted(SWEEPS)]
)
def test_a_table_sweeps_what_it_varies_over_three_seeds_and_each_job_composes(experiment):
    cfg = _hydra_config(f"experiment={experiment}")
    assert cfg.hydra.mode.name == "MULTIRUN"  # `train.py experiment=...` sweeps without -m too
    key, values = SWEEPS[experiment]
    assert dict(cfg.hydra.sweeper.params) == {key: ",".join(values), "seed": ",".join(SEEDS)}
    assert f"/paper/{experiment}_market/" in cfg.hydra.sweep.dir
    jobs = _jobs(f"experiment={experiment}")
    shown = {"true": "True", "false": "False"}  # how Hydra writes a swept boolean into a job's overrides
    assert [job[:2] for job in jobs] == [[f"{key}={shown.get(v, v)}", f"seed={s}"] for v in values for s in SEEDS]
    configs = compose_configs(jobs)
    for job, job_cfg in zip(jobs, configs):
        validate_config(job_cfg)
        assert job_cfg.data.name == "market1501" and job_cfg.seed == int(job[1].split("=")[1])
        assert job_cfg.trainer.max_epochs == 100 and job_cfg.expect_pretrained  # the paper's recipe


def _settings(cfg) -> tuple:
    net = cfg.model.net
    return (cfg.model.regions, net.intra_attention, net.fusion, net.decompose, cfg.model.lambda_intra, cfg.data.beta)


def test_the_tables_run_the_papers_networks_and_settings():
    pose = "pose"
    six = compose_configs([["experiment=table6", f"model={m}"] for m in SWEEPS["table6"][1]])
    assert [_settings(c) for c in six] == [
        ("strips", False, "concat", True, 0.5, 0.1),
        (pose, False, "concat", True, 0.5, 0.1),
        (pose, True, "concat", True, 0.5, 0.1),
        (pose, False, "inter", True, 0.5, 0.1),
        (pose, True, "inter", True, 0.5, 0.1),
    ]
    eight = compose_configs([["experiment=table8", f"model.net.decompose={v}"] for v in ("true", "false")])
    assert [_settings(c) for c in eight] == [
        (pose, True, "inter", True, 0.5, 0.1),
        (pose, True, "inter", False, 0.5, 0.1),
    ]
    nine = compose_configs([["experiment=table9", f"model.net.fusion={v}"] for v in ("concat", "fc", "inter")])
    assert [_settings(c)[:3] for c in nine] == [(pose, False, "concat"), (pose, False, "fc"), (pose, False, "inter")]
    ten = compose_configs([["experiment=table10", "model.lambda_intra=0.0"], ["experiment=table10"]])
    assert [_settings(c) for c in ten] == [(pose, True, "inter", True, 0.0, 0.1), (pose, True, "inter", True, 0.5, 0.1)]
    (eleven,) = compose_configs([["experiment=table11", f"data.beta={5 / 48!r}"]])
    assert _settings(eleven) == (pose, True, "inter", True, 0.5, 5 / 48)


def test_another_data_set_or_model_on_the_command_line_replaces_the_tables():
    cfg = _hydra_config("experiment=table6", "data=duke")
    assert cfg.data.name == "dukemtmcreid" and "/paper/table6_duke/" in cfg.hydra.sweep.dir
    jobs = _jobs("experiment=table6", "model=baseline", "model.pretrained=pre/baseline.ckpt")
    assert [job[:2] for job in jobs] == [["model=baseline", f"seed={s}"] for s in SEEDS]
    jobs = _jobs("experiment=table10", "seed=1")
    assert len(jobs) == 11 and all(job[1] == "seed=1" for job in jobs)


def test_the_paper_tables_page_gives_each_tables_command():
    page = (ROOT / "docs" / "paper_tables.md").read_text()
    for experiment in SWEEPS:
        assert f"train.py -m experiment={experiment}" in page
        assert re.search(rf"reid-report outputs/paper/{experiment}_market\b", page)
