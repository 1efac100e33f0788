"""Every command-line tool reads its options one way: `key=value`, composed by Hydra into its dataclass (conf.tool)."""

from __future__ import annotations

import dataclasses
import tomllib
from importlib import import_module

import pytest
from conftest import ROOT

from reid.conf.tool import tool_options

# module, options class: every console script of pyproject.toml but the two Hydra apps, the tools without one (the
# regions' and synthetic samples' pictures, the canonical pose file) and the benchmarks that `reid-bench <name>` runs
TOOLS = {
    "reid.tools.report": "ReportOptions",
    "reid.tools.export": "ExportOptions",
    "reid.tools.bench": "BenchOptions",
    "reid.tools.bench.loader": "LoaderOptions",
    "reid.tools.bench.step": "StepOptions",
    "reid.tools.bench.ranking": "RankingOptions",
    "reid.tools.bench.search": "SearchBenchOptions",
    "reid.tools.bench.truth": "TruthOptions",
    "reid.tools.summary": "SummaryOptions",
    "reid.tools.search": "SearchOptions",
    "reid.tools.synthetic_preview": "SyntheticPreviewOptions",
    "reid.tools.extract_pose": "ExtractOptions",
    "reid.tools.regions": "RegionsOptions",
    "reid.tools.canonical_poses": "CanonicalPosesOptions",
}


def test_every_console_script_is_a_tool_of_the_one_style():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    modules = {target.split(":")[0] for name, target in scripts.items() if name not in ("reid-train", "reid-evaluate")}
    assert modules <= set(TOOLS)


@pytest.mark.parametrize("module", sorted(TOOLS))
def test_a_misspelt_option_is_one_line_with_the_nearest(module, capsys):
    options = getattr(import_module(module), TOOLS[module])
    first = dataclasses.fields(options)[0].name
    assert import_module(module).main([f"{first}x=1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: unknown config key '{first}x' (did you mean '{first}'?)")


@pytest.mark.parametrize("module", sorted(TOOLS))
def test_help_lists_every_option_with_its_default(module, capsys):
    options = getattr(import_module(module), TOOLS[module])
    assert import_module(module).main(["--help"]) == 0
    shown = capsys.readouterr().out
    for item in dataclasses.fields(options):
        assert f"  {item.name}=" in shown and item.metadata["help"] in shown


def test_help_names_the_command_that_starts_the_tool(capsys):
    from reid.conf.tool import CONSOLE_TOOLS

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert {f"reid-{name}" for name in CONSOLE_TOOLS} == set(scripts)
    for module, first_line in (
        ("reid.tools.report", "reid-report [key=value ...]"),
        ("reid.tools.bench.loader", "reid-bench loader [key=value ...]"),
        ("reid.tools.canonical_poses", "python -m reid.tools.canonical_poses [key=value ...]"),
        ("reid.tools.synthetic_preview", "python -m reid.tools.synthetic_preview [key=value ...]"),
    ):
        assert import_module(module).main(["--help"]) == 0
        assert capsys.readouterr().out.startswith(first_line)


def test_values_are_typed_checked_and_taken_as_written():
    from reid.errors import ConfigError
    from reid.tools.bench import BenchOptions
    from reid.tools.report import ReportOptions

    bench = tool_options(BenchOptions, ["sizes=[demo]", "batch_size=4", "channels_last=false"], "bench")
    assert (bench.sizes, bench.batch_size, bench.channels_last) == (["demo"], 4, False)
    with pytest.raises(ConfigError, match=r"config key 'batch_size': 0 is out of range, must be >= 1"):
        tool_options(BenchOptions, ["batch_size=0"], "bench")
    with pytest.raises(ConfigError, match=r"expected one of 'wall', 'process', got 'cpu'"):
        tool_options(BenchOptions, ["timer=cpu"], "bench")
    # bare arguments fill the positional option; text keeps commas, '=' and quotes
    report = tool_options(ReportOptions, ["runs/a", "runs/b,c", "command=train.py -m model=a,b 'x'"], "report")
    assert report.paths == ["runs/a", "runs/b,c"] and report.command == "train.py -m model=a,b 'x'"
