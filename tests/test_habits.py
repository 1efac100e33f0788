"""The project's habits hold: pre-commit runs the checks of `make test`, and the checks cover the whole package."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib

import pytest
import yaml
from conftest import ROOT


def _make_target(name: str) -> list[str]:
    """The recipe lines of a Makefile target."""
    lines = (ROOT / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{name}:"))
    recipe = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip())
    return recipe


def _tool_call(command: str) -> str:
    """``$(BIN)/ruff check --quiet .`` and ``.venv/bin/ruff check --quiet`` -> ``ruff check``."""
    words = [w for w in command.split() if not w.startswith("-") and w != "."]
    return " ".join(re.sub(r"^(\$\(BIN\)|\.venv/bin)/", "", w) for w in words[:2] if "=" not in w)


def test_pre_commit_runs_every_check_that_make_test_runs_before_pytest():
    hooks = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())["repos"][0]["hooks"]
    hooked = {_tool_call(hook["entry"]) for hook in hooks}
    before_pytest = [line for line in _make_target("test") if "pytest" not in line and "mkdocs" not in line.lower()]
    assert before_pytest, "make test has no checks before pytest"
    assert {_tool_call(line) for line in before_pytest} <= hooked


@pytest.mark.skipif(shutil.which("pre-commit", path=str(ROOT / ".venv/bin")) is None, reason="pre-commit not installed")
def test_the_pre_commit_config_is_valid():
    result = subprocess.run(
        [str(ROOT / ".venv/bin/pre-commit"), "validate-config", ".pre-commit-config.yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_checks_the_whole_package_and_pytest_is_strict():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert config["tool"]["mypy"]["files"] == ["reid"]
    pytest_options = config["tool"]["pytest"]["ini_options"]
    assert "--strict-markers" in pytest_options["addopts"] and pytest_options["xfail_strict"] is True
    rules = set(config["tool"]["ruff"]["lint"]["select"])
    assert {"E", "W", "F", "I", "B", "UP", "SIM"} <= rules


def test_requires_python_admits_this_interpreter_and_nothing_older_than_the_code_needs():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    required = tuple(int(v) for v in re.findall(r"\d+", config["project"]["requires-python"])[:2])
    assert sys.version_info[:2] >= required
    assert required >= (3, 11)  # tomllib, typing features used by the package and its tests


def test_no_module_is_over_about_400_lines_without_a_stated_reason():
    """Files of one concern each: a long module says in its docstring why it stays whole."""
    import ast

    unexplained = []
    for path in sorted((ROOT / "reid").rglob("*.py")):
        text = path.read_text()
        if text.count("\n") > 430 and "Over 400 lines on purpose" not in (ast.get_docstring(ast.parse(text)) or ""):
            unexplained.append(f"{path.relative_to(ROOT)} ({text.count(chr(10))} lines)")
    assert not unexplained, "long modules without a stated reason: " + ", ".join(unexplained)
