"""The benchmarks live in reid/tools/bench/, one module each, and run at toy sizes through `reid-bench <name>`."""

from __future__ import annotations

import ast

from conftest import ROOT

from reid.tools import bench


def test_reid_bench_runs_a_benchmark_by_name(capsys):
    assert bench.main(["loader", "n=2", "augment=false"]) == 0
    out = capsys.readouterr().out
    assert out.count("ms/image") == 4  # two sizes, two pipelines
    shipped = {}
    for line in out.splitlines():
        if line.startswith("paper") and "bytes/image" in line:
            pipeline = line.split(", ")[1].split(":")[0]
            shipped[pipeline] = int(line.split(" ms/image, ")[1].split(" bytes")[0].replace(",", ""))
    assert shipped["device"] * 50 < shipped["cpu"]  # the device path ships originals, not five float crops
    assert bench.main(["search", "gallery=300", "queries=3", "dim=8", "chunk=64"]) == 0
    assert "search: " in capsys.readouterr().out


def test_the_ranking_benchmark_agrees_with_its_numpy_reference(capsys):
    argv = ["ranking", "repeats=1", "reference_queries=3", "large_gallery=200", "dim=4", "threads=1"]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    assert "evaluate_rank (CMC+mAP+mINP)" in out and "evaluate_features" in out
    difference = float(out.split("max |difference| from evaluate_rank on those queries ")[1].split()[0])
    assert difference < 1e-9


def test_help_names_the_other_benchmarks(capsys):
    assert bench.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "batch_size=32" in out and all(name in out for name in bench.BENCHMARKS[1:])
    assert bench.main(["truth", "--help"]) == 0
    assert "repeats=2" in capsys.readouterr().out


def test_every_benchmark_is_in_the_bench_package():
    outside = []
    for path in (ROOT / "reid").rglob("*.py"):
        if (ROOT / "reid" / "tools" / "bench") in path.parents:
            continue
        tree = ast.parse(path.read_text())
        names = [node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))]
        outside += [f"{path.relative_to(ROOT)}: {name}" for name in names if name.lower().startswith("bench")]
        outside += [str(path.relative_to(ROOT))] if path.stem == "bench" else []
    assert outside == []
