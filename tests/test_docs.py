"""The documentation: the options reference matches the schema, every page is in the nav, the site builds strictly."""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import os
import re
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT

from reid.conf import schema
from reid.tools import options_doc
from reid.tools.options_doc import COMMAND, render, yaml_comments

DOCS = ROOT / "docs"
MKDOCS_MISSING = [name for name in ("mkdocs", "material", "mkdocstrings") if importlib.util.find_spec(name) is None]


def test_the_committed_options_reference_is_the_generated_one():
    committed = (DOCS / "options.md").read_text()
    generated = render()
    if committed != generated:
        diff = "".join(
            list(
                difflib.unified_diff(
                    committed.splitlines(keepends=True), generated.splitlines(keepends=True), "committed", "generated"
                )
            )[:30]
        )
        pytest.fail(f"docs/options.md is out of date: run `{COMMAND}` and commit it\n{diff}")


def test_the_options_reference_has_every_schema_option_with_its_range_and_help():
    text = render()
    for path, cls in (
        ("model.net", schema.NetConfig),
        ("eval", schema.EvalConfig),
        ("data.augment", schema.AugmentConfig),
    ):
        for item in dataclasses.fields(cls):
            if not item.name.startswith("_") and not dataclasses.is_dataclass(item.default_factory):
                assert f"| `{path}.{item.name}` |" in text  # a group of options (eval.pictures) has a section
    rows = {line.split(" | ")[0].strip("| `"): line for line in text.splitlines() if line.startswith("| `")}
    # range from the schema, help from the YAML comment above the key
    assert "| [0, 0.5] | overlap between neighbouring regions" in rows["data.beta"]
    # choices from the Literal, help beside the key, the file's default
    assert "`standardize`, `batch`, `none`" in rows["model.net.attention_norm"]
    assert "| `0.01` | > 0 |" in rows["model.optimizer.lr"]
    # no YAML comment: the Args entry of the class the group configures
    assert "FC_reduce size of the global branch" in rows["model.net.global_dim"]


def test_yaml_comments_are_read_above_and_beside_their_keys():
    text = (
        "# the file's title, no key's\n"
        "# about a\n"
        "a: 1\n"
        "group:\n"
        "  # about b,\n"
        "  # on two lines\n"
        "  b: x   # and beside it\n"
        "  c: y   # y | z\n"
        "\n"
        "d: '#not a comment'\n"
    )
    assert yaml_comments(text) == {"a": "about a", "group.b": "about b, on two lines and beside it"}


def test_check_mode_says_when_the_file_is_stale(tmp_path, capsys):
    out = tmp_path / "options.md"
    out.write_text("old\n")
    assert options_doc.main([f"out={out}", "check=true"]) == 1
    assert COMMAND in capsys.readouterr().err
    assert options_doc.main([f"out={out}"]) == 0
    assert options_doc.main([f"out={out}", "check=true"]) == 0


def test_every_page_is_in_the_nav_and_every_readme_link_exists():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    assert config["theme"]["font"] is False  # no web fonts: the site builds and reads offline

    def pages(nav):
        for item in nav:
            value = next(iter(item.values())) if isinstance(item, dict) else item
            yield from pages(value) if isinstance(value, list) else [value]

    assert sorted(pages(config["nav"])) == sorted(path.name for path in DOCS.glob("*.md"))
    readme = (ROOT / "README.md").read_text()
    for target in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (ROOT / target).is_file(), target


def test_the_report_blocks_live_in_the_experiments_page():
    experiments = (DOCS / "experiments.md").read_text()
    names = re.findall(r"<!-- reid\.report:(\w+) -->", experiments)
    assert {"screening", "table6_synthetic", "table8", "table9", "table10", "table6_hard", "hard5"} <= set(names)
    for name in names:
        assert experiments.count(f"<!-- /reid.report:{name} -->") == 1
    for name in ("table6_synthetic", "table8", "table9", "table10", "table6_hard", "lambda_hard", "hard5"):
        assert f"into=docs/experiments.md name={name}" in experiments  # the command that rewrites it
    for path in (ROOT / "README.md", ROOT / "Makefile", *sorted((ROOT / "scripts").glob("*"))):
        if path.is_file():
            assert "into=README.md" not in path.read_text(errors="replace"), path


@pytest.mark.slow
@pytest.mark.skipif(
    bool(MKDOCS_MISSING), reason=f"not installed: {', '.join(MKDOCS_MISSING)} (pip install -e '.[docs]')"
)
def test_the_site_builds_strictly_and_loads_nothing_from_the_network(tmp_path):
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (site / "options" / "index.html").is_file() and (site / "api" / "index.html").is_file()
    assert 'id="reid.models.AttentionReIDNet"' in (site / "api" / "index.html").read_text()
    remote = re.compile(r"<(?:script|img|link)\b[^>]*(?:src|href)=\"(?:https?:)?//", re.IGNORECASE)
    for page in site.rglob("*.html"):
        assert not remote.search(page.read_text()), f"{page} loads a remote resource"
