"""Accuracy inside larger gene panels: the shared top genes trained alone and within N genes.

For each panel size N the bundled MERFISH crop is prepared as the demo prepares it (×4, 10 µm
bins) with the N genes of most molecules in the training blocks, the ``--preset`` model is trained
per seed with :mod:`bench_variants` (same budget, one torch thread per run) and scored on the
held-out ``test`` region of the section's own LR grid, gene by gene. The genes of the smallest
panel are in every larger one (the ranking is by the same training-block counts); the table
gives, per N, the mean over those shared genes of diffst's total and detail PCC (mean ± sample sd,
ddof 1, over seeds; ``bench_variants``' own summary gives the population sd, ddof 0), and the
mean over all N genes of diffst, bicubic and nearest. A panel whose ``genes.jsonl`` already holds
every seed is reused; one that stopped part-way runs only its missing seeds.

Writes ``<out>/n<N>/`` (store, runs, ``runs.jsonl``, ``genes.jsonl``) and ``<out>/panels.md``.

Usage::

    python benchmarks/bench_panels.py --panels 25 100 400 --seeds 0 1 2 --steps 800 \\
        --out runs/panels
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--panels", type=int, nargs="+", default=[25, 100, 400])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--preset", default="small")
    p.add_argument("--workers", type=int, default=2)
    return p


def _variants() -> Any:
    path = Path(__file__).with_name("bench_variants.py")
    spec = importlib.util.spec_from_file_location("bench_variants", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_variants"] = module  # its worker function is pickled by name
    spec.loader.exec_module(module)
    return module


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def _missing_seeds(genes_file: Path, seeds: list[int]) -> list[int]:
    """The seeds of ``seeds`` with no diffst row in ``genes_file`` (all of them without it)."""
    if not genes_file.is_file():
        return list(seeds)
    done = {r["seed"] for r in _rows(genes_file) if r.get("method") == "diffst"}
    return [s for s in seeds if s not in done]


def _mean_sd(values: list[float]) -> str:
    v = np.asarray(values, dtype=float)
    sd = float(np.std(v, ddof=1)) if len(v) > 1 else 0.0
    return f"{np.mean(v):.3f} ± {sd:.3f}"


def _per_seed(
    rows: list[dict[str, Any]], method: str, metric: str, subset: set[str] | None
) -> list[float]:
    """Per seed, the mean over genes (of ``subset``, else all) of one method's metric."""
    out = []
    for seed in sorted({r["seed"] for r in rows}):
        vals = [r.get(metric, np.nan) for r in rows if r["method"] == method
                and r["seed"] == seed and (subset is None or r["gene"] in subset)]  # fmt: skip
        out.append(float(np.nanmean(vals)))
    return out


def summarise(out: Path, panels: list[int]) -> str:
    """Markdown table of the runs under ``out`` (see the module docstring)."""
    genes = {n: _rows(out / f"n{n}" / "genes.jsonl") for n in panels}
    first = min(panels)
    shared = sorted({r["gene"] for r in genes[first]})
    for n in panels:
        missing = set(shared) - {r["gene"] for r in genes[n]}
        if missing:
            raise ValueError(f"panel {n} lacks {sorted(missing)} of panel {first}")
    lines = [
        f"| N | diffst PCC, {len(shared)} shared genes | diffst detail PCC, shared | "
        "diffst PCC, all N | bicubic PCC, all N | nearest PCC, all N | "
        "diffst detail, all N | bicubic detail, all N |",
        "|---:|---|---|---|---|---|---|---|",
    ]
    for n in panels:
        rows = genes[n]

        sub = set(shared)
        cells = [
            _mean_sd(_per_seed(rows, "diffst", "pcc", sub)),
            _mean_sd(_per_seed(rows, "diffst", "detail_pcc", sub)),
            _mean_sd(_per_seed(rows, "diffst", "pcc", None)),
            f"{np.mean(_per_seed(rows, 'bicubic', 'pcc', None)):.3f}",
            f"{np.mean(_per_seed(rows, 'nearest', 'pcc', None)):.3f}",
            _mean_sd(_per_seed(rows, "diffst", "detail_pcc", None)),
            f"{np.mean(_per_seed(rows, 'bicubic', 'detail_pcc', None)):.3f}",
        ]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    variants = _variants()
    for n in args.panels:
        missing = _missing_seeds(args.out / f"n{n}" / "genes.jsonl", args.seeds)
        if not missing:
            print(f"panel {n}: every seed already run, reusing {args.out / f'n{n}'}")
            continue
        if len(missing) < len(args.seeds):  # a run that stopped part-way: the other seeds only
            print(f"panel {n}: running the seeds not yet scored: {missing}")
        variants.main([
            "--data", "merfish4", "--genes", str(n), "--out", str(args.out / f"n{n}"),
            "--steps", str(args.steps), "--preset", args.preset, "--split", "test",
            "--per-gene", "--workers", str(args.workers), "--variant", "base=",
            "--seeds", *map(str, missing),
        ])  # fmt: skip
    text = summarise(args.out, args.panels)
    (args.out / "panels.md").write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
