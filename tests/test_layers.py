"""The layers show in the imports: lower layers never import higher ones (ARCHITECTURE.md's direction)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import ROOT

PACKAGE = ROOT / "reid"
# a module of the first package may import none of the second's (the lower layers come first)
ENTRY = ("reid.tasks", "reid.tools", "reid.cli")  # the layers that run things (with reid.conf, the Hydra users)
FORBIDDEN = [
    # the library halves only: their command lines (reid-extract-pose, the regions picture) are in reid.tools
    (
        "reid.pose",
        ("reid.models", "reid.lit", "reid.data", "reid.evaluation", "reid.inference", *ENTRY, "reid.conf", "hydra"),
    ),
    ("reid.data", ("reid.models", "reid.lit", "reid.evaluation", "reid.inference", *ENTRY)),
    (
        "reid.models",
        (
            "reid.data",
            "reid.lit",
            "reid.evaluation",
            "reid.inference",
            *ENTRY,
            "lightning",
            "pytorch_lightning",
            "hydra",
        ),
    ),
    ("reid.metrics", ("reid.models", "reid.data", "reid.lit", "reid.evaluation", "reid.inference", *ENTRY)),
    ("reid.evaluation", ("reid.lit", "reid.inference", *ENTRY, "hydra")),
    ("reid.viz", ("reid.lit", "reid.evaluation", "reid.inference", "reid.data.datasets", *ENTRY, "reid.conf", "hydra")),
    ("reid.lit", ("reid.inference", *ENTRY)),
    ("reid.inference", (*ENTRY, "reid.conf", "hydra")),
    ("reid.checkpoints", ("reid.lit", *ENTRY)),
    # what a file may name is decided below every layer that builds from files
    ("reid.trusted", ("reid.models", "reid.data", "reid.lit", "reid.checkpoints", "reid.inference", *ENTRY, "hydra")),
    ("reid.tools", ("reid.tasks",)),
    ("reid.errors", ("reid.",)),
    # below every layer: it may raise the project's errors, nothing more
    (
        "reid.files",
        tuple(
            f"reid.{name}"
            for name in (
                "models",
                "data",
                "lit",
                "pose",
                "metrics",
                "evaluation",
                "inference",
                "viz",
                "checkpoints",
                "trusted",
                "tasks",
                "tools",
                "cli",
                "conf",
                "schema",
                "rundir",
            )
        ),
    ),
    ("reid.names", ("reid.",)),
]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):  # lazy imports inside functions count too
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer_imports(layer: str):
    """(module, imported name) for every import of every module of ``layer``."""
    for path in PACKAGE.rglob("*.py"):
        module = _module_name(path)
        if module == layer or module.startswith(layer + "."):
            for name in _imports(path):
                yield module, name


@pytest.mark.parametrize(("layer", "forbidden"), FORBIDDEN, ids=[layer for layer, _ in FORBIDDEN])
def test_a_layer_imports_nothing_above_it(layer, forbidden):
    offenders = [
        f"{module} imports {name}"
        for module, name in _layer_imports(layer)
        if any(name == f or name.startswith(f if f.endswith(".") else f + ".") for f in forbidden)
    ]
    assert offenders == []


# the library layers hold no command-line code: a command line (its argparse parser or its `key=value` options,
# reid.conf.tool) is a tool of reid.tools (reid-search, the synthetic samples' picture, the canonical pose
# file), its library half stays here
LIBRARY = (
    "reid.pose",
    "reid.data",
    "reid.models",
    "reid.metrics",
    "reid.evaluation",
    "reid.viz",
    "reid.lit",
    "reid.inference",
    "reid.checkpoints",
)
CLI_MODULES = ("argparse", "reid.conf.tool")


@pytest.mark.parametrize("layer", LIBRARY)
def test_a_library_layer_holds_no_command_line(layer):
    offenders = [
        f"{module} imports {name} (fix: move its command line to reid/tools/)"
        for module, name in _layer_imports(layer)
        if any(name == f or name.startswith(f + ".") for f in CLI_MODULES)
    ]
    assert offenders == []


def _unit(module: str) -> str:
    """The package or top-level module a module belongs to (``reid.lit.module`` -> ``reid.lit``)."""
    return ".".join(module.split(".")[:2])


def test_no_import_cycle_between_the_packages():
    edges: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        module = _module_name(path)
        for name in _imports(path):
            if name.startswith("reid.") and _unit(name) != _unit(module):
                edges.setdefault(_unit(module), set()).add(_unit(name))
    cycles = []

    def visit(node: str, trail: list[str]) -> None:
        for target in sorted(edges.get(node, ())):
            if target in trail:
                cycles.append(" -> ".join(trail[trail.index(target) :] + [target]))
            elif len(trail) < 12:
                visit(target, trail + [target])

    for start in sorted(edges):
        visit(start, [start])
    assert cycles == []
