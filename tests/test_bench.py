"""The benchmarks live in reid/tools/bench/, one module each, and run at toy sizes through `reid-bench <name>`."""

from __future__ import annotations

import ast

import torch
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


def test_the_convolutions_benchmark_records_every_call_with_its_multiply_adds():
    from reid.models import ResNet50, count_macs
    from reid.tools.bench.convs import record_convolutions
    from reid.variants import build_variant

    whole = torch.zeros(2, 3, 64, 32)
    resnet = ResNet50(10)
    calls = record_convolutions(resnet, (whole,))
    assert len(calls) == 53  # the stem, 16 bottlenecks of three, 4 projections
    linear = 2 * 2048 * 10  # the classifier, the one layer count_macs counts besides the convolutions
    assert sum(call.macs() for call in calls) == 2 * count_macs(resnet, (64, 32), None) - linear
    net = build_variant("intra_inter", 10)
    parts = torch.zeros(2, 4, 3, 16, 32)
    calls = record_convolutions(net, (whole, parts))
    stems = [call for call in calls if call.weight_shape[1:] == (3, 3, 3)]
    # the shared Conv1 runs twice: on the whole body, and on the four stacked part crops with its weight repeated
    assert [(call.input_shape[1], call.weight_shape[0], call.groups) for call in stems] == [(3, 32, 1), (12, 128, 4)]
    # the images need no gradient, every later layer's input does (as in a training step)
    assert [call.input_grad for call in calls] == [call not in stems for call in calls]
    kinds = {call.kind for call in calls}
    assert {"1x1 plain", "3x3 plain", "1x1 grouped", "3x3 grouped", "1x1 depthwise"} <= kinds


def test_the_convolutions_report_puts_each_network_at_resnets_convolution_rate():
    from reid.tools.bench.convs import RESNET, ConvsOptions, KindRow, NetworkProfile, format_report

    # ResNet-50: 30 G forward multiply-adds of convolutions in 3 s (30 GMAC/s over three products), 1 s else
    resnet = NetworkProfile(RESNET, 4.0, 30.0, {"3x3 plain": KindRow(1, 3.0, 30.0)})
    # the other network: 10 G at half that rate (2 s), 1 s else; at ResNet-50's rate its convolutions take 1 s
    other = NetworkProfile("other", 3.0, 10.0, {"1x1 grouped": KindRow(4, 2.0, 10.0)})
    report = format_report([other, resnet], ConvsOptions(), matmul_gmacs=40.0)
    ratios = report.splitlines()[-1]
    assert ratios == "| other | 1.33x | 3.00x | 2.00x |"
    assert "| other | 1x1 grouped | 4 | 2.000 | 10.00 | 15.0 |" in report
    assert "| ResNet-50 | 4.000 | 90.0 | 22.5 | 56% | 3.000 | 30.0 | 1.000 |" in report


def test_the_convolutions_benchmark_names_an_unknown_model(capsys):
    assert bench.main(["convs", "variants=[nope]"]) == 2
    assert capsys.readouterr().err.startswith("error:")


def test_the_network_benchmark_builds_its_networks_at_the_width_asked(capsys):
    common = ["sizes=[demo]", "variants=[baseline]", "batch_size=2", "warmup=0", "iters=1", "resnet=false"]
    rows = {}
    for width in ("null", "0.5"):
        assert bench.main([*common, f"width={width}"]) == 0
        table = capsys.readouterr().out.splitlines()
        rows[width] = next(line for line in table if line.startswith("| baseline"))
        settings = next(line for line in table if line.startswith("Hardware:"))
        assert ("width 0.5" in settings) == (width == "0.5")  # the settings line names a width it was given
    params = {width: float(row.split("|")[3]) for width, row in rows.items()}
    assert params["0.5"] < 0.5 * params["null"]  # half the channels: about a quarter of the convolution weights


def test_the_setup_benchmark_times_both_verification_modes_on_the_same_images(capsys, data_dir):
    from conftest import TINY_OVERRIDES

    overrides = [item for item in TINY_OVERRIDES if item.startswith("data.options")] + [f"paths.data_dir={data_dir}"]
    assert bench.main(["setup", "repeats=1", f"overrides=[{','.join(overrides)}]"]) == 0
    lines = capsys.readouterr().out.splitlines()
    counts = {line.split(":")[0]: line.split(" for ")[1] for line in lines if line.startswith("data.verify_images=")}
    assert set(counts) == {"data.verify_images=decode", "data.verify_images=header"}
    assert len(set(counts.values())) == 1  # both modes set up the same images
    assert lines[-1].startswith("decoding every image adds")
    assert bench.main(["setup", "modes=[nope]"]) == 2
