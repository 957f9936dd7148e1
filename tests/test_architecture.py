"""The package's layers (docs/architecture.md), asserted from the imports of ``src/diffst``.

Every ``import diffst…`` / ``from diffst… import`` statement counts, at module level or inside a
function: a module may import its own unit and units on lower layers only, and the module graph
has no circle.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "diffst"

# bottom to top; a unit is a top-level module or sub-package of diffst
LAYERS: tuple[tuple[str, frozenset[str]], ...] = (
    ("base", frozenset({"_version", "allocator", "config", "geometry", "keys", "precision"})),
    ("io", frozenset({"io"})),
    ("blocks", frozenset({"data", "models", "diffusion", "metrics", "baselines", "distributed"})),
    ("runs and sections", frozenset({"runs", "sections", "datasets", "synthetic"})),
    ("preparation and training", frozenset({"preparation", "training"})),
    ("inference", frozenset({"inference"})),
    ("evaluation", frozenset({"evaluation"})),
    ("api", frozenset({"api"})),
    ("command line", frozenset({"cli", "commands"})),
    ("entry points", frozenset({"__main__", "__init__"})),
)
LEVEL = {unit: k for k, (_, units) in enumerate(LAYERS) for unit in units}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def unit_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The diffst modules that ``path`` imports (``from diffst.x import y`` counts as
    ``diffst.x.y`` when that is a module, else ``diffst.x``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "diffst")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] != "diffst":
                continue
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in modules else node.module)
    return found


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(files)
    return {m: imports_of(p, modules) - {m} for m, p in files.items()}


GRAPH = import_graph()


def test_every_unit_has_a_layer() -> None:
    units = {unit_of(m) for m in GRAPH}
    assert units - set(LEVEL) == set(), "add new units to LAYERS and docs/architecture.md"


def test_imports_go_down_or_stay_inside_their_unit() -> None:
    wrong = []
    for module, targets in sorted(GRAPH.items()):
        here = unit_of(module)
        for target in sorted(targets):
            there = unit_of(target)
            if there != here and LEVEL[there] >= LEVEL[here]:
                wrong.append(f"{module} -> {target}")
    assert wrong == []


def test_no_import_circles() -> None:
    sorter = graphlib.TopologicalSorter({m: ts & GRAPH.keys() for m, ts in GRAPH.items()})
    try:
        sorter.prepare()
    except graphlib.CycleError as err:
        pytest.fail(f"import circle: {' -> '.join(err.args[1])}")


@pytest.mark.parametrize(
    ("importer", "forbidden"),
    [("inference", "training"), ("training", "evaluation"), ("inference", "preparation")],
)
def test_named_rules(importer: str, forbidden: str) -> None:
    hits = [
        f"{m} -> {t}"
        for m, ts in GRAPH.items()
        if unit_of(m) == importer
        for t in ts
        if unit_of(t) == forbidden
    ]
    assert hits == []


def test_the_rule_catches_an_upward_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from diffst.training.loop import train\n", encoding="utf-8")
    assert "diffst.training.loop" in imports_of(bad, set(GRAPH))
