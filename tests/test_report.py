"""Ablation report: runs found below a multirun folder become Table 6 and the lambda/beta sweep tables and plots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

import reid.tools.report as reid_report
from reid.tools.report import (
    ReportError,
    ablation_table,
    attention_health_table,
    collect_runs,
    format_beta,
    main,
    sweep_tables,
    training_curves,
    write_report,
)

MODEL_NET = {
    "baseline": {"regions": "strips", "intra_attention": False, "fusion": "concat"},
    "aligned": {"regions": "pose", "intra_attention": False, "fusion": "concat"},
    "intra": {"regions": "pose", "intra_attention": True, "fusion": "concat"},
    "inter": {"regions": "pose", "intra_attention": False, "fusion": "inter"},
    "intra_inter": {"regions": "pose", "intra_attention": True, "fusion": "inter"},
}
DATA_NAMES = {
    "market": ("market1501", {}),
    "duke": ("dukemtmcreid", {}),
    "cuhk03_labeled": ("cuhk03", {"labeled": True}),
}


def write_run(
    run_dir: Path,
    model: str,
    data: str,
    *,
    lambda_intra: float = 0.5,
    beta: float = 0.1,
    rank1: float | None = 0.9,
    mean_ap: float = 0.7,
    overrides: list[str] | None = None,
    with_hydra_yaml: bool = True,
    task_name: str = "train",
    ckpt_path: str | None = None,
    cwd: Path | None = None,
) -> Path:
    """One run folder as train.py / evaluate.py leave it: .hydra/{config,hydra,overrides}.yaml + metrics.json."""
    hydra_dir = run_dir / ".hydra"
    hydra_dir.mkdir(parents=True)
    net = MODEL_NET[model]
    data_name, options = DATA_NAMES[data]
    config = (
        f"task_name: {task_name}\n"
        + (f"ckpt_path: {ckpt_path}\n" if ckpt_path else "")
        + "paths:\n  output_dir: ${hydra:runtime.output_dir}\n"  # needs Hydra's resolver: must not break the report
        + f"data:\n  name: {data_name}\n  options: {json.dumps(options)}\n"
        + f"  regions: ${{model.regions}}\n  beta: {beta}\n"
        + f"model:\n  regions: {net['regions']}\n  lambda_intra: {lambda_intra}\n"
        + f"  net:\n    intra_attention: {str(net['intra_attention']).lower()}\n    fusion: {net['fusion']}\n"
    )
    (hydra_dir / "config.yaml").write_text(config)
    if with_hydra_yaml:
        (hydra_dir / "hydra.yaml").write_text(
            "hydra:\n  runtime:\n"
            f"    cwd: {cwd or run_dir}\n"
            f"    choices:\n      model: {model}\n      data: {data}\n      hydra/launcher: basic\n"
        )
    (hydra_dir / "overrides.yaml").write_text("".join(f"- {o}\n" for o in (overrides or [])))
    metrics = {"mAP": mean_ap, "rank5": 0.99}
    if rank1 is not None:
        metrics["rank1"] = rank1
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    return run_dir


def table_rows(markdown: str) -> list[list[str]]:
    """The rows of the (first) Markdown table in ``markdown``, header included, separator left out."""
    rows = []
    for line in markdown.splitlines():
        if line.startswith("|") and not line.startswith("|-") and not line.startswith("|:"):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
        elif rows and not line.startswith("|"):
            break
    return rows


@pytest.fixture()
def ablation_multirun(tmp_path: Path) -> Path:
    """A multirun folder: the five variants on Market (intra_inter twice, two seeds), two on Duke,
    an unknown variant, and out of order on disk."""
    root = tmp_path / "multiruns" / "2026-01-01_00-00-00"
    jobs = [
        ("intra_inter", "market", 0.90, 0.80, ["seed=1"]),
        ("baseline", "market", 0.80, 0.60, []),
        ("inter", "market", 0.86, 0.70, []),
        ("my_variant", "market", 0.50, 0.40, []),
        ("aligned", "market", 0.82, 0.65, []),
        ("intra", "market", 0.85, 0.69, []),
        ("intra_inter", "market", 0.92, 0.81, ["seed=2"]),
        ("aligned", "duke", 0.70, 0.55, []),
        ("baseline", "duke", 0.65, 0.50, []),
    ]
    for num, (model, data, r1, mean_ap, overrides) in enumerate(jobs):
        net_model = "aligned" if model == "my_variant" else model
        run = write_run(root / str(num), net_model, data, rank1=r1, mean_ap=mean_ap, overrides=overrides)
        if model == "my_variant":
            hydra_yaml = run / ".hydra" / "hydra.yaml"
            hydra_yaml.write_text(hydra_yaml.read_text().replace("model: aligned", "model: my_variant"))
    (root / "multirun.yaml").write_text("hydra: {}\n")
    return root


@pytest.fixture()
def sweep_multirun(tmp_path: Path) -> Path:
    """A 2 x 2 lambda x beta grid of intra_inter on Duke and a 3-point lambda sweep of intra on Market."""
    root = tmp_path / "sweep"
    num = 0
    for lam in (0.1, 0.5):
        for beta in (3 / 48, 0.1):
            r1 = 0.70 + (0.05 if lam == 0.1 else 0.0) + (0.02 if beta == 0.1 else 0.0)
            write_run(
                root / str(num),
                "intra_inter",
                "duke",
                lambda_intra=lam,
                beta=beta,
                rank1=r1,
                mean_ap=r1 - 0.2,
                overrides=[f"model.lambda_intra={lam}", f"data.beta={beta}"],
            )
            num += 1
    for lam, r1 in ((0.0, 0.80), (0.2, 0.84), (1.0, 0.82)):
        write_run(root / str(num), "intra", "market", lambda_intra=lam, beta=3 / 48, rank1=r1, mean_ap=r1 - 0.1)
        num += 1
    return root


def test_collect_runs_reads_model_data_lambda_beta_and_metrics(ablation_multirun):
    runs = collect_runs([ablation_multirun])
    assert len(runs) == 9
    first = next(r for r in runs if r.path.name == "0")
    assert (first.model, first.data, first.lambda_intra, first.beta) == ("intra_inter", "market", 0.5, 0.1)
    assert first.metrics["rank1"] == pytest.approx(0.90)
    assert first.overrides == ["seed=1"]
    assert not first.notes


def test_table6_orders_variants_and_data_sets_and_averages_runs_sharing_a_cell(ablation_multirun):
    rows = table_rows(ablation_table(collect_runs([ablation_multirun])))
    assert rows[0] == ["model", "λ", "β", "Market-1501", "DukeMTMC-reID"]
    assert [row[0] for row in rows[1:]] == ["baseline", "aligned", "intra", "inter", "intra_inter", "my_variant"]
    by_model = {row[0]: row for row in rows[1:]}
    assert by_model["baseline"][1:] == ["0.5", "0.1 (1/10)", "80.00 / 60.00", "65.00 / 50.00"]
    assert by_model["intra"][3:] == ["85.00 / 69.00", ""]
    # two seeds: the mean, the sample standard deviation (sqrt(2) for 90 and 92) and n
    assert by_model["intra_inter"][3] == "91.00 ± 1.41 / 80.50 ± 0.71 (n=2)"


def test_a_changed_setting_or_model_option_gets_its_own_row(tmp_path):
    write_run(tmp_path / "a", "intra_inter", "market", lambda_intra=0.5, rank1=0.90)
    write_run(tmp_path / "b", "intra_inter", "market", lambda_intra=0.1, rank1=0.94)
    write_run(tmp_path / "c", "intra_inter", "market", rank1=0.91, overrides=["model.net.fusion=fc", "seed=3"])
    rows = table_rows(ablation_table(collect_runs([tmp_path])))
    assert [row[:2] + [row[3]] for row in rows[1:]] == [
        ["intra_inter", "0.1", "94.00 / 70.00"],
        ["intra_inter", "0.5", "90.00 / 70.00"],
        ["intra_inter[model.net.fusion=fc]", "0.5", "91.00 / 70.00"],
    ]


def test_lambda_beta_grid_and_one_dimensional_lambda_sweep(sweep_multirun):
    tables = sweep_tables(collect_runs([sweep_multirun]))
    assert len(tables) == 2
    # the Market lambda sweep comes first (data set order), one row per lambda at beta = 3/48
    assert "intra on Market-1501" in tables[0] and "β = 0.0625 (3/48)" in tables[0]
    assert table_rows(tables[0]) == [
        ["λ", "R1", "mAP", "n"],
        ["0", "80.00", "70.00", "1"],
        ["0.2", "84.00", "74.00", "1"],
        ["1", "82.00", "72.00", "1"],
    ]
    assert "intra_inter on DukeMTMC-reID" in tables[1] and "λ × β" in tables[1]
    assert table_rows(tables[1]) == [
        ["λ \\ β", "0.0625 (3/48)", "0.1 (1/10)"],
        ["0.1", "75.00 / 55.00", "77.00 / 57.00"],
        ["0.5", "70.00 / 50.00", "72.00 / 52.00"],
    ]


def test_beta_sweep_at_fixed_lambda_gets_a_table_11(tmp_path):
    for num, (beta, r1) in enumerate(((0.0, 0.80), (2 / 48, 0.83), (3 / 48, 0.85))):
        write_run(tmp_path / str(num), "intra_inter", "market", lambda_intra=0.1, beta=beta, rank1=r1)
    (table,) = sweep_tables(collect_runs([tmp_path]))
    assert "against β (Table 11), λ = 0.1" in table
    assert [row[:2] for row in table_rows(table)] == [
        ["β", "R1"],
        ["0", "80.00"],
        ["0.04167 (2/48)", "83.00"],
        ["0.0625 (3/48)", "85.00"],
    ]


def test_format_beta_shows_fractions_of_the_body_height():
    assert format_beta(0.0) == "0"
    assert format_beta(6 / 48) == "0.125 (6/48)"
    assert format_beta(0.1) == "0.1 (1/10)"
    assert format_beta(0.123456) == "0.123456"
    assert format_beta(None) == "?"


def test_write_report_writes_markdown_and_one_plot_per_swept_parameter(sweep_multirun, tmp_path):
    out = tmp_path / "report"
    report = write_report(collect_runs([sweep_multirun]), out)
    text = report.read_text()
    assert report == out / "report.md"
    plots = sorted(p.name for p in out.glob("*.png"))
    assert plots == [
        "sweep_beta_intra_inter_duke.png",
        "sweep_lambda_intra_inter_duke.png",
        "sweep_lambda_intra_market.png",
    ]
    for name in plots:
        assert f"]({name})" in text
        assert min(Image.open(out / name).size) > 100
    assert "## Table 6" in text and "## Runs" in text


def test_cli_prints_the_report_and_writes_into_the_first_folder(ablation_multirun, capsys):
    assert main([str(ablation_multirun)]) == 0
    printed = capsys.readouterr().out
    assert "| intra_inter | 0.5 | 0.1 (1/10) | 91.00 ± 1.41 / 80.50 ± 0.71 (n=2) |" in printed
    assert (ablation_multirun / "report.md").read_text().strip() == printed.strip()
    assert "No sweep" in printed


def test_cli_errors_on_an_empty_or_missing_folder(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(empty)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: no metrics.json below {empty}") and "python train.py -m" in err
    assert len(err.splitlines()) == 1
    assert main([str(tmp_path / "missing")]) == 2
    assert "missing is not a folder" in capsys.readouterr().err
    with pytest.raises(ReportError, match="no metrics.json"):
        collect_runs([empty])


def test_runs_without_hydra_files_fall_back_and_say_so(tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "metrics.json").write_text(json.dumps({"rank1": 0.5, "mAP": float("nan")}))
    write_run(tmp_path / "guessed", "baseline", "cuhk03_labeled", with_hydra_yaml=False, rank1=0.88)
    runs = {r.path.name: r for r in collect_runs([tmp_path])}
    assert (runs["bare"].model, runs["bare"].data, runs["bare"].lambda_intra) == ("?", "?", None)
    assert "no readable .hydra/config.yaml" in runs["bare"].notes[0]
    assert (runs["guessed"].model, runs["guessed"].data) == ("baseline", "cuhk03_labeled")
    assert "guessed from config.yaml" in runs["guessed"].notes[0]
    text = write_report(list(runs.values()), tmp_path / "out").read_text()
    assert "## Notes" in text
    # mAP NaN (the CUHK03 protocol) shows as a dash
    assert "| ? | ? | ? |  | 50.00 / – |" in text


def test_evaluation_runs_take_the_model_of_their_checkpoints_training_run(tmp_path):
    trained = write_run(
        tmp_path / "train" / "runs" / "t1",
        "inter",
        "market",
        lambda_intra=0.2,
        rank1=0.9,
        overrides=["model.net.dropout=0.3"],
    )
    (trained / "checkpoints").mkdir()
    evaluation = write_run(
        tmp_path / "evaluate" / "runs" / "e1",
        "intra_inter",
        "duke",
        lambda_intra=0.5,
        rank1=0.6,
        task_name="evaluate",
        ckpt_path="train/runs/t1/checkpoints/last.ckpt",
        cwd=tmp_path,
    )
    (run,) = collect_runs([evaluation])
    assert (run.model, run.data, run.lambda_intra) == ("inter[model.net.dropout=0.3]", "duke", 0.2)
    orphan = write_run(
        tmp_path / "evaluate" / "runs" / "e2",
        "intra_inter",
        "duke",
        task_name="evaluate",
        ckpt_path="/nowhere/last.ckpt",
    )
    (run,) = collect_runs([orphan])
    assert run.model == "?" and "training run was not found" in run.notes[0]


def test_metrics_files_inside_a_runs_own_folders_are_not_runs(tmp_path):
    run = write_run(tmp_path / "0", "intra", "market")
    (run / "wandb" / "files").mkdir(parents=True)
    (run / "wandb" / "files" / "metrics.json").write_text("{}")
    assert [r.path for r in collect_runs([tmp_path])] == [run]


def test_multirun_jobs_are_listed_in_job_number_order(tmp_path):
    for num in (10, 2, 1):
        write_run(tmp_path / str(num), "intra", "market")
    assert [r.path.name for r in collect_runs([tmp_path])] == ["1", "2", "10"]


def _add_attention(run_dir: Path, saturated: float, mu: float | None = None) -> None:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    attention = {"intra_mean": {"saturated": saturated, "working": 0.2, "spatial_std": 0.15}}
    if mu is not None:
        attention["inter"] = {
            part: {"mean": mu, "std": 0.01} for part in ("head", "upper_body", "upper_leg", "lower_leg")
        }
    metrics["attention"] = attention
    (run_dir / "metrics.json").write_text(json.dumps(metrics))


def test_attention_health_of_several_seeds_is_averaged_per_model(tmp_path):
    root = tmp_path / "multiruns" / "x"
    _add_attention(write_run(root / "0", "intra_inter", "market", overrides=["seed=1"]), 0.10, mu=0.4)
    _add_attention(write_run(root / "1", "intra_inter", "market", overrides=["seed=2"]), 0.30, mu=0.6)
    write_run(root / "2", "aligned", "market")
    runs = collect_runs([root])
    assert [run.attention != {} for run in runs] == [True, True, False]
    rows = table_rows(attention_health_table(runs))
    assert rows[0][:6] == ["model", "λ", "β", "data", "n", "saturated %"]
    assert len(rows) == 2  # the model without attention figures has no row
    row = dict(zip(rows[0], rows[1]))
    assert row["model"] == "intra_inter" and row["n"] == "2"
    assert row["saturated %"] == "20.0 ± 14.1"
    assert row["μ"] == "0.500 ± 0.141"


def test_a_synthetic_preset_is_a_data_set_of_its_own(tmp_path):
    root = tmp_path / "multiruns" / "y"
    write_run(root / "0", "aligned", "market")
    hard = write_run(root / "1", "aligned", "market", overrides=["data.options.preset=hard"])
    config = hard / ".hydra" / "config.yaml"
    config.write_text(config.read_text().replace("  options: {}", "  options: {preset: hard}"))
    assert sorted(run.data for run in collect_runs([root])) == ["market", "market[hard]"]


def test_into_replaces_only_the_marked_block_of_a_document(ablation_multirun, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- reid.report:t6 -->\nold table\n<!-- /reid.report:t6 -->\nafter\n")
    assert main([str(ablation_multirun), f"into={readme}", "name=t6", "command=train.py -m x"]) == 0
    text = readme.read_text()
    assert text.startswith("intro\n<!-- reid.report:t6 -->\nProduced by `train.py -m x` from 9 runs")
    assert "old table" not in text and text.endswith("<!-- /reid.report:t6 -->\nafter\n")
    assert "| intra_inter |" in text
    assert main([str(ablation_multirun), f"into={readme}", "name=other"]) == 2  # no such block
    assert "| intra_inter |" in readme.read_text()


def test_training_curves_come_from_the_runs_csv_logs(tmp_path):
    root = tmp_path / "multiruns" / "z"
    for num, seed in enumerate((1, 2)):
        run = write_run(root / str(num), "intra", "market", overrides=[f"seed={seed}"])
        (run / "csv").mkdir()
        (run / "csv" / "metrics.csv").write_text(
            "epoch,train/acc,val/mAP\n0,0.5,\n1,0.9,\n1,,0.6\n".replace("0.9", "0.9" if seed == 1 else "0.7")
        )
    write_run(root / "2", "aligned", "market")  # no CSV log: no curve
    runs = collect_runs([root])
    pictures = training_curves(runs)
    assert list(pictures) == ["curves_market.png"]
    points = [reid_report._curve_points(run) for run in runs]
    assert points[0]["train/acc"] == {1: 0.5, 2: 0.9} and points[0]["val/mAP"] == {2: 0.6}
    assert points[2] == {}
    out = write_report(runs, tmp_path / "out")
    assert (tmp_path / "out" / "curves_market.png").is_file()
    assert "![curves_market.png](curves_market.png)" in out.read_text()


def test_the_report_reads_its_options_as_every_tool_does(ablation_multirun, tmp_path, capsys):
    # key=value composed by Hydra into ReportOptions: a misspelt option is one line with the nearest
    assert main([str(ablation_multirun), f"outt={tmp_path}"]) == 2
    assert capsys.readouterr().err.strip() == "error: unknown config key 'outt' (did you mean 'out'?)"
    # a text option is taken as written: commas and '=' do not make a sweep
    readme = tmp_path / "R.md"
    readme.write_text("<!-- reid.report:t6 -->\n<!-- /reid.report:t6 -->\n")
    assert (
        main([f"paths=[{ablation_multirun}]", f"into={readme}", "name=t6", "command=train.py -m model=a,b seed=1,2"])
        == 0
    )
    assert "Produced by `train.py -m model=a,b seed=1,2`" in readme.read_text()
    capsys.readouterr()
    assert main(["--help"]) == 0
    assert "into=null" in capsys.readouterr().out


def test_a_run_scored_on_a_validation_subset_is_never_averaged_with_full_runs(tmp_path):
    full = write_run(tmp_path / "a", "intra_inter", "market", rank1=0.90)
    limited = write_run(tmp_path / "b", "intra_inter", "market", rank1=0.50)
    metrics = json.loads((limited / "metrics.json").read_text())
    metrics["eval_subset"] = {"setting": "trainer.limit_val_batches", "limit": 2, "queries": 12, "total_queries": 40}
    (limited / "metrics.json").write_text(json.dumps(metrics))
    runs = collect_runs([tmp_path])
    assert {run.path.name: run.model for run in runs} == {"a": "intra_inter", "b": "intra_inter[eval subset]"}
    assert any("12 of 40 queries" in note for run in runs for note in run.notes)
    rows = {row[0]: row for row in table_rows(ablation_table(runs))[1:]}
    assert rows["intra_inter"][-1].startswith("90.00") and rows["intra_inter[eval subset]"][-1].startswith("50.00")
    assert full.is_dir()


def _evaluation_of(trained: Path, run_dir: Path, *, recorded_beta: float | None, overrides: list[str] | None = None):
    """An evaluate.py run of ``trained``'s checkpoint whose own config keeps the default beta 0.1."""
    run = write_run(
        run_dir,
        "intra_inter",
        "market",
        beta=0.1,
        task_name="evaluate",
        ckpt_path=str(trained / "checkpoints" / "last.ckpt"),
        overrides=overrides,
    )
    if recorded_beta is not None:
        metrics = json.loads((run / "metrics.json").read_text())
        metrics["input_settings"] = {"beta": recorded_beta, "whole_size": [384, 192], "regions": "pose"}
        (run / "metrics.json").write_text(json.dumps(metrics))
    return run


def test_an_evaluation_is_reported_with_the_beta_it_recorded_not_its_config_default(tmp_path, capsys):
    trained = write_run(tmp_path / "train" / "t1", "intra_inter", "market", beta=0.2)
    (trained / "checkpoints").mkdir()
    evaluation = _evaluation_of(trained, tmp_path / "evaluate" / "e1", recorded_beta=0.2)
    (run,) = collect_runs([evaluation])
    assert run.beta == pytest.approx(0.2) and not run.notes
    assert main([str(evaluation)]) == 0
    captured = capsys.readouterr()
    assert "| intra_inter | 0.5 | 0.2 (1/5) |" in captured.out
    assert "0.1 (1/10)" not in captured.out and "scored with beta" not in captured.out + captured.err
    # a β given on evaluate.py's command line is what it recorded: then the note is true
    other = _evaluation_of(trained, tmp_path / "evaluate" / "e2", recorded_beta=0.1, overrides=["data.beta=0.1"])
    (run,) = collect_runs([other])
    assert run.beta == pytest.approx(0.1)
    assert run.notes == [f"{other}: scored with beta=0.1 a model trained with beta=0.2"]


def test_an_evaluation_that_recorded_no_input_settings_used_the_checkpoints_beta(tmp_path):
    trained = write_run(tmp_path / "train" / "t1", "intra_inter", "market", beta=0.2)
    (trained / "checkpoints").mkdir()
    (run,) = collect_runs([_evaluation_of(trained, tmp_path / "e1", recorded_beta=None)])
    assert run.beta == pytest.approx(0.2) and not run.notes
    given = _evaluation_of(trained, tmp_path / "e2", recorded_beta=None, overrides=["data.beta=0.1"])
    (run,) = collect_runs([given])
    assert run.beta == pytest.approx(0.1) and "scored with beta=0.1" in run.notes[0]


def test_job_folders_without_metrics_are_named_not_silently_left_out(ablation_multirun, capsys):
    for job in ("9", "10"):
        (ablation_multirun / job / ".hydra").mkdir(parents=True)
        (ablation_multirun / job / ".hydra" / "config.yaml").write_text("task_name: train\n")
    (ablation_multirun / "0" / "wandb" / ".hydra").mkdir(parents=True)  # inside a job: not a job
    assert reid_report.incomplete_runs([ablation_multirun]) == [ablation_multirun / "9", ablation_multirun / "10"]
    assert main([str(ablation_multirun)]) == 0
    captured = capsys.readouterr()
    line = next(line for line in captured.err.splitlines() if "without metrics.json" in line)
    assert line.startswith("note: 2 job folders without metrics.json left out")
    assert line.endswith(f"{ablation_multirun / '9'}, {ablation_multirun / '10'}")
    report = (ablation_multirun / "report.md").read_text()
    assert "9 runs (2 incomplete jobs left out: see Notes)" in report
    assert f"{ablation_multirun / '9'}, {ablation_multirun / '10'}" in report.split("## Notes", 1)[1]


def _features_with_an_unscorable_query(tmp_path: Path) -> Path:
    import torch

    from reid.evaluation import FeatureSet

    torch.manual_seed(0)
    # queries: pid 1 (cam 0), pid 2 (cam 0), pid 3 (cam 0); the gallery sees pid 3 from camera 0 only
    pids = torch.tensor([1, 2, 3, 1, 2, 3, 4])
    camids = torch.tensor([0, 0, 0, 1, 1, 0, 1])
    is_query = torch.tensor([True, True, True, False, False, False, False])
    features = FeatureSet(
        features={"all": torch.randn(7, 8)},
        pids=pids,
        camids=camids,
        is_query=is_query,
        paths=[str(tmp_path / f"img{i}.jpg") for i in range(7)],
        meta={"flip": False},
    )
    return features.save(tmp_path / "features.pt")


def test_the_evaluation_report_states_the_queries_scored_and_skipped(make_cfg, tmp_path):
    from reid.tasks import evaluate

    cfg = make_cfg(
        f"features_path={_features_with_an_unscorable_query(tmp_path)}",
        "eval.branches=false",
        "eval.pictures.enabled=false",
        config_name="evaluate",
        tiny=False,
    )
    evaluate(cfg)
    out = Path(cfg.paths.output_dir)
    report = (out / "report.md").read_text()
    assert (
        "- images: 2 queries scored (1 of 3 skipped: the gallery holds no image of their identity "
        "from another camera), 4 gallery" in report
    )
    assert "3 queries" not in report
    assert json.loads((out / "metrics.json").read_text())["queries"] == {"total": 3, "scored": 2, "skipped": 1}


def test_a_shared_run_folder_cannot_make_the_report_print_this_machines_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("REID_TEST_SECRET", "hunter2")
    run = write_run(tmp_path / "sweep" / "0", "intra_inter", "market")
    config = run / ".hydra" / "config.yaml"
    config.write_text(config.read_text().replace("lambda_intra: 0.5", "lambda_intra: ${oc.env:REID_TEST_SECRET}"))
    (run / ".hydra" / "overrides.yaml").write_text("- tag=${oc.env:REID_TEST_SECRET}\n")
    runs = collect_runs([tmp_path / "sweep"])
    text = write_report(runs, tmp_path / "report").read_text()
    assert runs and "hunter2" not in text and "hunter2" not in repr(runs)


def test_the_summary_states_the_commit_and_threads_and_flags_mixed_code(tmp_path):
    from reid.tools.report import summary_markdown

    runs = []
    for index, (commit, threads) in enumerate([("a" * 40, 1), ("a" * 40, 1), ("b" * 40, 2)]):
        run = write_run(tmp_path / "sweep" / str(index), "intra", "market")
        recorded = {"commit": commit, "dirty": False, "threads": threads, "torch": "2.13.0"}
        (run / "provenance.json").write_text(json.dumps(recorded))
        runs = collect_runs([tmp_path / "sweep"])
    same = summary_markdown(runs[:2], command="train.py -m")
    assert "Code: commit aaaaaaa; 1 thread." in same and "Mixed" not in same
    mixed = summary_markdown(runs, command="train.py -m")
    assert "commits aaaaaaa, bbbbbbb" in mixed and "1, 2 threads" in mixed and "Mixed" in mixed


def test_train_records_its_commit_and_threads(make_cfg):
    import reid.tasks as runner

    cfg = make_cfg("trainer.max_epochs=1")
    runner.train(cfg)
    recorded = json.loads((Path(cfg.paths.output_dir) / "provenance.json").read_text())
    assert recorded["threads"] >= 1 and recorded["torch"]
    assert recorded["commit"] is None or len(recorded["commit"]) == 40


def test_train_records_the_code_checked_out_when_it_started(make_cfg, monkeypatch):
    import reid.tasks as runner
    from reid.tasks import common

    cfg = make_cfg("trainer.max_epochs=1")

    def fake_provenance() -> dict:  # "b": asked after training (metrics written), a commit made meanwhile
        finished = (Path(cfg.paths.output_dir) / "metrics.json").exists()
        return {"commit": ("b" if finished else "a") * 40, "dirty": False, "threads": 1, "torch": "x"}

    monkeypatch.setattr(common, "provenance", fake_provenance)
    runner.train(cfg)
    recorded = json.loads((Path(cfg.paths.output_dir) / "provenance.json").read_text())
    assert recorded["commit"] == "a" * 40


def test_models_are_compared_seed_by_seed_on_the_set_and_its_test_sets(tmp_path):
    from reid.tools.report import paired_table

    scores = {("intra", "1"): (0.70, 0.50), ("intra", "2"): (0.60, 0.40), ("intra_inter", "1"): (0.60, 0.45)}
    scores[("intra_inter", "2")] = (0.62, 0.36)
    scores[("intra_inter", "3")] = (0.99, 0.99)  # no intra run of seed 3: left out of the pairs
    for index, ((model, seed), (rank1, mean_ap)) in enumerate(scores.items()):
        run = write_run(
            tmp_path / "sweep" / str(index), model, "market", rank1=rank1, mean_ap=mean_ap, overrides=[f"seed={seed}"]
        )
        metrics = json.loads((run / "metrics.json").read_text())
        metrics["test_sets"] = {"occluded": {"rank1": rank1 - 0.1, "mAP": mean_ap}}
        (run / "metrics.json").write_text(json.dumps(metrics))
    rows = table_rows(paired_table(collect_runs([tmp_path / "sweep"])))
    rows = rows[1:]  # the header
    assert rows[0][:5] == ["intra_inter − intra", "0.5", "0.1 (1/10)", "Market-1501", "2"]
    # R1: -10 and +2 points -> -4.00 ± 8.49; mAP: -5 and -4 -> -4.50 ± 0.71
    assert rows[0][5:] == ["-4.00 ± 8.49", "-4.50 ± 0.71"]
    assert rows[1][3] == "Market-1501 → occluded" and rows[1][5:] == ["-4.00 ± 8.49", "-4.50 ± 0.71"]


def test_against_pairs_every_model_with_the_reference_at_any_lambda(tmp_path):
    from reid.tools.report import paired_table

    # intra ignores λ (recorded at 0.5); the full model ran at λ = 0.5 and 1
    scores = {
        ("intra", 0.5, "1"): (0.70, 0.50),
        ("intra", 0.5, "2"): (0.60, 0.40),
        ("intra_inter", 0.5, "1"): (0.60, 0.45),
        ("intra_inter", 0.5, "2"): (0.50, 0.30),
        ("intra_inter", 1.0, "1"): (0.72, 0.49),
        ("intra_inter", 1.0, "2"): (0.60, 0.42),
    }
    for index, ((model, lam, seed), (rank1, mean_ap)) in enumerate(scores.items()):
        write_run(
            tmp_path / "sweep" / str(index),
            model,
            "market",
            lambda_intra=lam,
            rank1=rank1,
            mean_ap=mean_ap,
            overrides=[f"seed={seed}"],
        )
    runs = collect_runs([tmp_path / "sweep"])
    plain = table_rows(paired_table(runs))[1:]
    assert [row[:2] for row in plain] == [["intra_inter − intra", "0.5"]]  # λ = 1 has no partner by default
    rows = table_rows(paired_table(runs, against="intra"))[1:]
    assert [row[:2] for row in rows] == [["intra_inter − intra", "0.5"], ["intra_inter − intra", "1"]]
    # λ = 1 against intra: R1 +2 and 0 points -> +1.00 ± 1.41; mAP -1 and +2 -> +0.50 ± 2.12
    assert rows[1][5:] == ["+1.00 ± 1.41", "+0.50 ± 2.12"]
    # report.md carries the same pairs
    report = write_report(runs, tmp_path / "out", against="intra").read_text()
    assert (
        "## Paired by seed" in report
        and "| intra_inter − intra | 1 | 0.1 (1/10) | Market-1501 | 2 | +1.00 ± 1.41" in report
    )


def test_report_refuses_an_against_that_names_no_model(tmp_path, capsys):
    from reid.tools.report import main

    write_run(tmp_path / "sweep" / "0", "intra", "market", overrides=["seed=1"])
    assert main([str(tmp_path / "sweep"), "against=intra_interr"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: against=intra_interr: no such model among the runs (fix: one of intra")


def test_the_health_table_shows_the_truth_figures_when_runs_have_them(tmp_path):
    from reid.tools.report import attention_health_table

    run = write_run(tmp_path / "run", "intra_inter", "market")
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["attention"] = {
        "intra_mean": {"saturated": 0.0, "working": 0.2, "spatial_std": 0.17, "auroc": 0.61},
        "complementarity_mean": 0.18,
        "inter": {"head": {"mean": 0.01, "std": 0.001}},
        "inter_mean": {"rho_visible": 0.006, "rho_confidence": 0.042},
    }
    (run / "metrics.json").write_text(json.dumps(metrics))
    table = attention_health_table(collect_runs([run]))
    assert "mask AUROC" in table and "| 0.610 | 0.180 | 0.006 | 0.042 |" in table


def test_an_evaluation_with_visibility_matching_is_that_matchings_row_paired_with_the_plain_one(tmp_path):
    from reid.tools.report import paired_table

    plain_scores = {"1": (0.60, 0.40), "2": (0.50, 0.30)}
    matched_scores = {"1": (0.64, 0.41), "2": (0.52, 0.35)}
    for seed in plain_scores:
        trained = write_run(tmp_path / "train" / seed, "intra_inter", "market", overrides=[f"seed={seed}"])
        (trained / "checkpoints").mkdir()
        for matching, scores in (("none", plain_scores), ("keypoints", matched_scores)):
            run = _evaluation_of(
                trained, tmp_path / "evaluate" / f"{seed}_{matching}", recorded_beta=None, overrides=[f"seed={seed}"]
            )
            rank1, mean_ap = scores[seed]
            plain_rank1, plain_map = plain_scores[seed]
            metrics = {"rank1": plain_rank1, "mAP": plain_map}
            if matching != "none":  # evaluate.py scores both, the matched ones in their own block
                metrics["visibility_matching"] = {"source": matching, "rank1": rank1, "mAP": mean_ap}
            (run / "metrics.json").write_text(json.dumps(metrics))
    runs = collect_runs([tmp_path / "evaluate"])
    by_label = {(run.model, run.overrides[0]): run for run in runs}
    matched = by_label[("intra_inter[matching=keypoints]", "seed=1")]
    assert matched.metrics["rank1"] == pytest.approx(0.64) and matched.metrics["plain/rank1"] == pytest.approx(0.60)
    assert by_label[("intra_inter", "seed=2")].metrics["rank1"] == pytest.approx(0.50)
    rows = table_rows(paired_table(runs))[1:]
    # R1: +4 and +2 points -> +3.00 ± 1.41; mAP: +1 and +5 -> +3.00 ± 2.83
    assert rows[0][0] == "intra_inter[matching=keypoints] − intra_inter"
    assert rows[0][5:] == ["+3.00 ± 1.41", "+3.00 ± 2.83"]


def test_a_variant_is_paired_with_its_own_model_and_models_with_the_plain_one_before():
    from reid.tools.report.tables import _comparisons

    ordered = ["intra", "intra[matching=keypoints]", "intra_inter", "intra_inter[matching=keypoints]"]
    ordered.append("intra_inter[matching=mu]")
    assert _comparisons(ordered) == [
        ("intra", "intra[matching=keypoints]"),
        ("intra", "intra_inter"),
        ("intra_inter", "intra_inter[matching=keypoints]"),
        ("intra_inter", "intra_inter[matching=mu]"),
    ]
    # a variant of a variant against that variant
    assert _comparisons(["intra_inter", "intra_inter[x=1]", "intra_inter[x=1,matching=mu]"])[1] == (
        "intra_inter[x=1]",
        "intra_inter[x=1,matching=mu]",
    )
    # a variant of a variant that sorts before it is still compared with it, and only that way round
    base, matched = "intra_inter[x=1]", "intra_inter[x=1,matching=keypoints]"
    assert _comparisons(sorted([base, matched])) == [(base, matched)]
    # a variant whose own model was not run is compared with the model before it, as every model is
    assert _comparisons(["intra", "intra_inter[model.net.inter_source=map]"]) == [
        ("intra", "intra_inter[model.net.inter_source=map]")
    ]


def test_a_run_on_the_device_data_path_is_its_own_variant(tmp_path):
    cpu = write_run(tmp_path / "a", "intra_inter", "market", overrides=["seed=1", "data.pipeline=cpu"])
    device = write_run(tmp_path / "b", "intra_inter", "market", overrides=["seed=1", "data.pipeline=device"])
    other = write_run(tmp_path / "c", "intra_inter", "market", overrides=["seed=1", "data.batch_size=8"])
    names = [run.model for run in collect_runs([cpu, device, other])]
    assert names == ["intra_inter[data.pipeline=cpu]", "intra_inter[data.pipeline=device]", "intra_inter"]
    detected = write_run(tmp_path / "d", "intra_inter", "market", overrides=["seed=1", "data.pose.visibility=detected"])
    assert collect_runs([detected])[0].model == "intra_inter[data.pose.visibility=detected]"
