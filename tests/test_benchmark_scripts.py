"""``make bench`` runs ``benchmarks/run_all.py``: every script and option it names exists."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(script: str):
    spec = importlib.util.spec_from_file_location(Path(script).stem, BENCH / script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _run_all():
    return _load("run_all.py")


def test_makefile_bench_target_names_run_all() -> None:
    makefile = (BENCH.parent / "Makefile").read_text()
    assert "benchmarks/run_all.py" in makefile and (BENCH / "run_all.py").is_file()


@pytest.mark.parametrize("full", [False, True])
@pytest.mark.parametrize("bf16", [False, True])
def test_every_planned_benchmark_parses_its_arguments(full: bool, bf16: bool) -> None:
    run_all = _run_all()
    for title, script, args in run_all.plan(full, 2, bf16):
        assert (BENCH / script).is_file(), title
        _load(script)._parser().parse_args(args)  # an unknown option exits with status 2
    titles = [t for t, _, _ in run_all.plan(full, 2, bf16)]
    assert any("bf16" in t for t in titles) == bf16


def test_summary_table_formats_the_figures_present() -> None:
    rows = [{"batch": 1, "patches_per_s": 2.5, "peak_rss_gib": 0.5}, {"batch": 4, "amp": "bf16"}]
    table = _run_all().summary_table(rows)
    assert table[0] == "| batch | arithmetic | patches/s | peak RSS GiB |"
    assert table[2] == "| 1 | – | 2.50 | 0.50 |" and table[3] == "| 4 | bf16 | – | – |"


@pytest.mark.parametrize("script", ["bench_variants.py", "bench_budget.py", "bench_detail.py"])
def test_experiment_scripts_parse_their_documented_usage(script: str) -> None:
    parser = _load(script)._parser()
    base = ["--out", "x"] if script == "bench_detail.py" else ["--data", "detail", "--out", "x"]
    extra = ["--variant", "base="] if script == "bench_variants.py" else []
    args = parser.parse_args(base + extra)
    assert args.out.name == "x"


def _exists(module: object, parent: str, name: str) -> bool:
    if hasattr(module, name):
        return True
    try:
        return importlib.util.find_spec(f"{parent}.{name}") is not None
    except ModuleNotFoundError:  # the parent is a module, not a package
        return False


@pytest.mark.parametrize(
    "script", sorted(p.name for p in (Path(__file__).parents[1] / "benchmarks").glob("*.py"))
)
def test_every_diffst_name_a_benchmark_imports_exists(script: str) -> None:
    """Function-level imports only fail when that branch runs; check them all up front."""
    import ast
    import importlib

    path = Path(__file__).parents[1] / "benchmarks" / script
    missing = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("diffst"):
            module = importlib.import_module(node.module)
            missing += [
                f"{node.module}.{a.name}"
                for a in node.names
                if not _exists(module, node.module, a.name)
            ]
    assert missing == []


def test_the_import_check_sees_a_missing_name() -> None:
    import diffst.commands.predict as command

    assert not _exists(command, "diffst.commands.predict", "_load_sample")
    assert _exists(command, "diffst.commands.predict", "add_arguments")


def test_bench_panels_reruns_only_the_seeds_a_stopped_panel_lacks(tmp_path: Path) -> None:
    import json

    panels = _load("bench_panels.py")
    genes = tmp_path / "genes.jsonl"
    assert panels._missing_seeds(genes, [0, 1, 2]) == [0, 1, 2]  # never run
    rows = [{"seed": 0, "method": "diffst", "gene": "a"}, {"seed": 1, "method": "bicubic"}]
    genes.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    assert panels._missing_seeds(genes, [0, 1, 2]) == [1, 2]  # seed 1 has no diffst row
    assert panels._missing_seeds(genes, [0]) == []
