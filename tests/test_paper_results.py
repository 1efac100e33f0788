"""The paper's numbers as data (reid/tools/report/paper_results.yaml), and `reid-report` printing them by the runs."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest
from test_report import table_rows, write_run

from reid.tools.report import (
    PAPER_RESULTS_FILE,
    PaperResultsError,
    ablation_table,
    collect_runs,
    label_network,
    load_paper_results,
    main,
    paper_table,
)
from reid.tools.report.compare import result_network


def _value(table: str, data: str, row: str, metric: str, **where) -> float:
    (found,) = [
        r
        for r in load_paper_results()
        if (r.table, r.data, r.row, r.metric) == (table, data, row, metric)
        and all(getattr(r, key) == value for key, value in where.items())
    ]
    return found.value


def test_the_packaged_file_loads_and_holds_table_6s_market_rows():
    results = load_paper_results()
    assert PAPER_RESULTS_FILE.name == "paper_results.yaml" and PAPER_RESULTS_FILE.is_file()
    assert {r.table for r in results} == {str(t) for t in range(3, 12)}
    market6 = {(r.row, r.metric): r for r in results if r.table == "6" and r.data == "market"}
    # Table 6, Market-1501: baseline 86.63 / 66.25, intra 92.04 / 78.92, intra + inter 94.65 / 85.22
    assert market6[("baseline", "rank1")].value == 86.63 and market6[("baseline", "mAP")].value == 66.25
    assert market6[("intra", "mAP")].value == 78.92
    assert market6[("intra_inter", "rank1")].value == 94.65
    assert {row for row, _ in market6} == {"baseline", "aligned", "intra", "inter", "intra_inter", "intra_inter*"}
    # the text's settings, and the starred row's best ones (§4.4.4)
    assert (market6[("intra", "rank1")].lambda_intra, market6[("intra", "rank1")].beta) == (0.5, 0.1)
    starred = market6[("intra_inter*", "mAP")]
    assert (starred.model, starred.value, starred.lambda_intra, starred.beta) == ("intra_inter", 86.47, 0.1, 3 / 48)


def test_values_of_the_other_tables_as_printed():
    # Table 5, CUHK03-D R10; Table 7 head without intra-attention; Table 8 without decomposition, R20
    assert _value("5", "cuhk03_detected", "ours", "rank10") == 99.42
    assert _value("7", "market", "head", "mAP", model="inter") == 21.83
    full = [r for r in load_paper_results() if r.table == "8" and r.row == "full" and r.metric == "rank20"]
    assert [(r.value, dict(r.net)) for r in full] == [(99.17, {"decompose": False})]
    # Table 10: lambda is the row; Table 11: beta is the row, in steps of H/48
    assert _value("10", "duke", "0.3", "mAP") == 72.83 and _value("10", "duke", "0.3", "mAP", lambda_intra=0.3)
    assert _value("11", "duke", "3/48", "rank5", beta=3 / 48, lambda_intra=0.5) == 92.68
    # Table 11's 5H/48 row repeats Table 6's intra_inter row (the text's beta "H/10" may have been 5H/48)
    for data in ("market", "duke"):
        for metric in ("rank1", "mAP"):
            assert _value("11", data, "5/48", metric) == _value("6", data, "intra_inter", metric)
    # CUHK03: the paper prints no mAP
    assert not [r for r in load_paper_results() if r.data.startswith("cuhk03") and r.metric == "mAP"]


def test_tables_that_repeat_a_result_agree():
    """Tables 3-5 repeat Table 6's starred row, Tables 7-11 its intra_inter row: a mistyped value shows here."""
    seen: dict[tuple, dict[str, float]] = defaultdict(dict)
    for r in load_paper_results():
        network = result_network(r)
        assert network is not None, r
        key = (r.data, network, r.lambda_intra, r.beta, None if r.branch in (None, "all") else r.branch, r.metric)
        seen[key][r.table] = r.value
    repeated = {key: tables for key, tables in seen.items() if len(tables) > 1}
    assert len(repeated) >= 20
    assert {key: tables for key, tables in repeated.items() if len(set(tables.values())) > 1} == {}


def test_a_malformed_file_is_refused_in_one_line(tmp_path):
    bad = tmp_path / "paper.yaml"
    bad.write_text('tables:\n  "6":\n    rows:\n      - {row: intra, data: market, rank_1: 90.0}\n')
    with pytest.raises(PaperResultsError, match=r"table 6, row 1: unknown keys \['rank_1'\]"):
        load_paper_results(bad)
    bad.write_text('tables:\n  "6":\n    rows:\n      - {row: intra, data: mars, rank1: 90.0}\n')
    with pytest.raises(PaperResultsError, match="data 'mars' is not one of market"):
        load_paper_results(bad)


def test_a_label_is_the_network_it_names():
    assert label_network("aligned[model.net.fusion=inter]") == label_network("inter")
    assert label_network("intra_inter[model.net.decompose=True]") == label_network("intra_inter")
    assert label_network("intra_inter[model.net.decompose=False]") != label_network("intra_inter")
    assert label_network("intra[model.net.fusion=fc]") == label_network("intra_fc") != label_network("aligned")
    for other in ("my_variant", "?", "intra[eval subset]", "intra[model.label_smoothing=0.1]"):
        assert label_network(other) is None


def _paper_rows(text: str) -> dict[str, dict[str, str]]:
    """The paper table of a report, by "model / data" (and feature), as header -> cell."""
    rows = table_rows(text.split("## Beside the paper's numbers", 1)[1])
    header = rows[0]
    out = {}
    for row in rows[1:]:
        cells = dict(zip(header, row))
        out[" / ".join([cells["model"], cells["data"]] + ([cells["feature"]] if "feature" in cells else []))] = cells
    return out


@pytest.fixture()
def table6_market(tmp_path: Path) -> Path:
    """Table 6 on Market-1501, hand-made: two seeds per model, R1 and mAP chosen against the paper's."""
    root = tmp_path / "paper" / "table6_market" / "2026-01-01_00-00-00"
    measured = {  # (R1, mAP) of seed 1 and seed 2, in percent
        "baseline": ((85.00, 65.00), (87.00, 67.00)),  # means 86.00 / 66.00: paper 86.63 / 66.25
        "aligned": ((90.00, 72.00), (90.00, 73.00)),  # 90.00 / 72.50: paper 89.98 / 72.46
        "intra": ((92.04, 78.92), (92.04, 78.92)),  # the paper's own numbers
        "inter": ((91.00, 77.00), (93.00, 79.00)),  # 92.00 / 78.00: paper 92.07 / 78.46
        "intra_inter": ((95.00, 86.00), (96.00, 86.50)),  # 95.50 / 86.25: paper 94.65 / 85.22
    }
    job = 0
    for model, seeds in measured.items():
        for seed, (rank1, mean_ap) in enumerate(seeds, start=1):
            write_run(
                root / str(job),
                model,
                "market",
                rank1=rank1 / 100,
                mean_ap=mean_ap / 100,
                overrides=[f"model={model}", f"seed={seed}", "experiment=table6"],
            )
            job += 1
    # no paper value: another lambda, and a data set the paper does not use
    write_run(root / str(job), "intra", "market", lambda_intra=0.3, rank1=0.5, mean_ap=0.4)
    write_run(tmp_path / "other" / "0", "intra", "cuhk03_labeled", beta=0.2, rank1=0.5, mean_ap=0.4)
    return root


def test_the_report_prints_the_papers_numbers_beside_the_measured_ones(table6_market, capsys):
    assert main([str(table6_market)]) == 0
    printed = capsys.readouterr().out
    rows = _paper_rows(printed)
    assert list(rows) == [f"{m} / Market-1501" for m in ("baseline", "aligned", "intra", "inter", "intra_inter")]
    baseline = rows["baseline / Market-1501"]
    assert (baseline["R1"], baseline["paper R1"], baseline["Δ R1"]) == ("86.00 ± 1.41", "86.63", "-0.63")
    assert (baseline["mAP"], baseline["paper mAP"], baseline["Δ mAP"]) == ("66.00 ± 1.41", "66.25", "-0.25")
    assert (baseline["n"], baseline["λ"], baseline["β"], baseline["paper table"]) == ("2", "0.5", "0.1 (1/10)", "6")
    aligned = rows["aligned / Market-1501"]
    assert (aligned["R1"], aligned["paper R1"], aligned["Δ R1"]) == ("90.00 ± 0.00", "89.98", "+0.02")
    assert (aligned["mAP"], aligned["paper mAP"], aligned["Δ mAP"]) == ("72.50 ± 0.71", "72.46", "+0.04")
    assert aligned["paper table"] == "6, 9"  # Table 9's concatenation is the aligned model
    assert rows["intra / Market-1501"]["Δ R1"] == "+0.00" and rows["intra / Market-1501"]["Δ mAP"] == "+0.00"
    inter = rows["inter / Market-1501"]
    assert (inter["Δ R1"], inter["Δ mAP"], inter["paper table"]) == ("-0.07", "-0.46", "6, 7, 9")
    full = rows["intra_inter / Market-1501"]
    assert (full["R1"], full["paper R1"], full["Δ R1"]) == ("95.50 ± 0.71", "94.65", "+0.85")
    assert (full["mAP"], full["paper mAP"], full["Δ mAP"]) == ("86.25 ± 0.35", "85.22", "+1.03")
    # a metric the paper prints for some rows only (R5: Tables 7-9): "–" where it has none
    assert rows["baseline / Market-1501"]["paper R5"] == "–" and full["paper R5"] == "98.21"
    # Table 6 itself is as before: the comparison is a section of its own
    table6 = table_rows(printed.split("## Table 6", 1)[1])
    assert table6[0] == ["model", "λ", "β", "Market-1501"]
    assert table6[1] == ["baseline", "0.5", "0.1 (1/10)", "86.00 ± 1.41 / 66.00 ± 1.41 (n=2)"]


def test_rows_without_a_paper_value_show_nothing_extra(table6_market, tmp_path):
    runs = collect_runs([table6_market, tmp_path / "other"])
    assert len(runs) == 12
    assert not any(row[1] == "0.3" or "CUHK03-L" in row for row in table_rows(paper_table(runs))[1:])
    assert "intra | 0.3 |" in ablation_table(runs)  # still in Table 6
    synthetic = [r for r in runs if r.lambda_intra == 0.3] + [r for r in runs if r.data == "cuhk03_labeled"]
    assert paper_table(synthetic) == ""


def test_fusions_by_their_network_and_table_7_by_branch(tmp_path):
    write_run(tmp_path / "0", "aligned", "market", rank1=0.9094, overrides=["model.net.fusion=fc"])
    write_run(tmp_path / "1", "intra", "market", rank1=0.9, overrides=["model.net.fusion=fc"])  # no paper row
    run = write_run(tmp_path / "2", "intra_inter", "market", rank1=0.9465, mean_ap=0.8522)
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["branches"] = {"head": {"rank1": 0.5, "mAP": 0.25}, "all": {"rank1": 0.9465, "mAP": 0.8522}}
    (run / "metrics.json").write_text(json.dumps(metrics))
    rows = _paper_rows("## Beside the paper's numbers\n\n" + paper_table(collect_runs([tmp_path])))
    assert list(rows) == [
        "aligned[model.net.fusion=fc] / Market-1501 / all",
        "intra_inter / Market-1501 / all",
        "intra_inter / Market-1501 / head",
    ]
    assert rows["aligned[model.net.fusion=fc] / Market-1501 / all"]["paper table"] == "9"
    assert rows["aligned[model.net.fusion=fc] / Market-1501 / all"]["Δ R1"] == "+0.00"
    head = rows["intra_inter / Market-1501 / head"]  # Table 7: head with intra-attention, 50.86 / 26.76
    assert (head["R1"], head["paper R1"], head["Δ R1"], head["Δ mAP"], head["paper table"]) == (
        "50.00",
        "50.86",
        "-0.86",
        "-1.76",
        "7",
    )
